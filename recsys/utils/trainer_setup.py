"""Building a Lightning Trainer from config, and saying how its fit ended."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from omegaconf import DictConfig

from recsys.utils.precision import resolve_trainer_precision

log = logging.getLogger(__name__)

fit_report_keys = ("precision", "epochs_done", "steps_done", "stopped_by_time", "fit_s")


def instantiate_trainer(cfg: DictConfig, **kwargs: Any):
    """``hydra.utils.instantiate(cfg.trainer)`` with ``precision=auto`` resolved for this machine."""
    import hydra

    precision = resolve_trainer_precision(cfg.get("precision"), cfg.get("accelerator"))
    log.info("trainer precision: %s (configured %s)", precision, cfg.get("precision"))
    return hydra.utils.instantiate(cfg, precision=precision, **kwargs)


def fit_and_report(trainer, model, datamodule, ckpt_path: str | None) -> dict[str, Any]:
    """``trainer.fit`` (resumed from ``ckpt_path`` when given), then ``fit_report`` of it."""
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return fit_report(trainer, time.perf_counter() - started)


def fit_report(trainer, fit_seconds: float) -> dict[str, Any]:
    """The best checkpoint and its validation score, epochs and steps done, the precision used,
    and whether ``max_time`` cut training short: a run stopped by the clock depends on the
    machine's speed, so it is flagged loudly."""
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None  # None: no max_time
    by_time = remaining is not None and remaining <= 0
    values = (
        str(trainer.precision),
        int(trainer.current_epoch),
        int(trainer.global_step),
        by_time,
        round(fit_seconds, 1),
    )
    callback = trainer.checkpoint_callback
    score = callback.best_model_score if callback else None
    if callback is not None and callback.monitor is None:  # no selection: the last epoch is what is tested
        monitor = trainer.lightning_module.hparams.get("monitor")
        score = trainer.callback_metrics.get(monitor) if monitor else None
    report = {
        "best_checkpoint": callback.best_model_path if callback else "",
        "val_best": float(score) if score is not None else None,
        **dict(zip(fit_report_keys, values, strict=True)),
    }
    if by_time:
        warnings.warn(
            f"training stopped by trainer.max_time after {report['epochs_done']} epochs / "
            f"{report['steps_done']} steps (max_epochs={trainer.max_epochs}): the result depends on "
            "this machine's speed; bound the run by epochs or steps to compare results",
            stacklevel=2,
        )
    return report
