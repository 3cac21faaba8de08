"""EMA of the weights, evaluated and tested as what it is."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeights(EMAWeightAveraging):
    """Lightning's EMA callback, with one fix for select-on-val-then-test runs.

    Validation sees the averaged weights and checkpoints store them as ``state_dict`` (the raw
    ones under ``current_model_state``). Lightning's callback restores the *raw* weights whenever
    a checkpoint is loaded while it is attached, so ``trainer.test(ckpt_path="best")`` would test
    different weights from the ones validation selected. Outside fitting (test, validate) this
    keeps the averaged ``state_dict`` the checkpoint was selected with; resuming a fit still
    restores both.
    """

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
