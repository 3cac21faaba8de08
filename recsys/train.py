"""python -m recsys.train experiment=two_tower|ranker: fit, select on validation, test, write metrics.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from recsys.data.dataset import PreparedDataset
from recsys.data.derived_settings import derive_settings
from recsys.data.preparation import peak_rss_gib
from recsys.evaluation.report import write_train_metrics
from recsys.tuning.pruning import pruning_callbacks
from recsys.utils.hydra_helpers import (
    CONFIG_PATH,
    command_line_keys,
    exit_on_user_error,
    instantiate_list,
    optimized_value,
)
from recsys.utils.trainer_setup import fit_report, instantiate_trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    derived: dict[str, Any] = {}
    if cfg.get("derive"):  # values the recipe takes from the data (recsys/data/derived_settings.py)
        dataset = PreparedDataset.load(datamodule.processed_dir)
        overrides, derived = derive_settings(
            dataset, cfg.derive, command_line_keys(), lambda key: OmegaConf.select(cfg, key) is not None
        )
        # the prepared data keeps its configured history cap: every entry point composing this data
        # config (evaluate, export) then finds it current; the derived value is the training window
        OmegaConf.update(cfg, "data.preparer.max_history", cfg.data.preparer.max_history, merge=False)
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
        datamodule = hydra.utils.instantiate(cfg.data)  # the prepared data is current (cap unchanged)
    # shapes only the data knows (e.g. the retrieval model's dim for a ranker)
    inputs = datamodule.model_inputs() if hasattr(datamodule, "model_inputs") else {}
    dataset_dir = str(Path(datamodule.processed_dir).resolve())  # checkpoints work from any cwd
    model = hydra.utils.instantiate(cfg.model, dataset_dir=dataset_dir, **inputs)
    trainer: L.Trainer = instantiate_trainer(
        cfg.trainer,
        callbacks=instantiate_list(cfg.get("callbacks")) + pruning_callbacks(cfg.get("optuna_trial")),
        logger=instantiate_list(cfg.get("logger")),
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = fit_report(trainer, time.perf_counter() - started)
    if not cfg.get("test", True):
        return metrics
    trainer.test(
        model, datamodule=datamodule, ckpt_path=metrics["best_checkpoint"] or None, weights_only=True
    )
    dataset = datamodule.dataset
    metrics = {
        **model.test_results,
        **{k: float(v) for k, v in getattr(model, "val_at_best", {}).items()},
        **derived,
        "split": "test",
        "n_users": dataset.n_rows("test"),  # users the test metrics average over
        "n_users_dataset": dataset.n_users,
        "n_items": dataset.n_items,
        "exclude_seen": dataset.exclude_seen,
        **({"text_used": bool(model.hparams.use_text)} if "use_text" in model.hparams else {}),
        **metrics,
        "peak_rss_gib": peak_rss_gib(),
    }
    if trainer.is_global_zero:  # every rank holds the reduced metrics; one writes them
        write_train_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    main()
