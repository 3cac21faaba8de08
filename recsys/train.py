"""python -m recsys.train experiment=two_tower|ranker: fit, select on validation, test, write metrics.json."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from recsys.candidates.holdout_fit import fit_holdout
from recsys.data.derived_settings import prepared_datamodule
from recsys.evaluation.report import train_summary, write_train_metrics
from recsys.tuning.pruning import pruning_callbacks
from recsys.utils.hydra_helpers import (
    CONFIG_PATH,
    command_line_keys,
    exit_on_user_error,
    instantiate_list,
    optimized_value,
    save_run_config,
)
from recsys.utils.trainer_setup import fit_and_report, instantiate_trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    holdout = fit_holdout(cfg, train)  # holdout_ckpt=auto: the served retrieval run's twin, fitted once
    L.seed_everything(cfg.seed, workers=True)
    run_config = copy.deepcopy(cfg)  # before instantiation resolves interpolations in place
    datamodule, derived = prepared_datamodule(cfg, command_line_keys, mirror=run_config)
    save_run_config(run_config, cfg.paths)  # with the derived values: what a holdout twin replays
    inputs = datamodule.model_inputs() if hasattr(datamodule, "model_inputs") else {}  # e.g. the ranker's dim
    dataset_dir = str(Path(datamodule.processed_dir).resolve())  # checkpoints work from any cwd
    model = hydra.utils.instantiate(cfg.model, dataset_dir=dataset_dir, **inputs)
    callbacks = instantiate_list(cfg.get("callbacks")) + pruning_callbacks(cfg.get("optuna_trial"))
    trainer = instantiate_trainer(
        cfg.trainer, callbacks=callbacks, logger=instantiate_list(cfg.get("logger"))
    )
    fit = fit_and_report(trainer, model, datamodule, cfg.get("ckpt_path"))
    if not cfg.get("test", True):
        return fit
    trainer.test(model, datamodule=datamodule, ckpt_path=fit["best_checkpoint"] or None, weights_only=True)
    metrics = train_summary(model, datamodule.dataset, derived | holdout, fit)
    if trainer.is_global_zero:  # every rank holds the reduced metrics; one writes them
        write_train_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    main()
