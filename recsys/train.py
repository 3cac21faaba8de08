"""python -m recsys.train experiment=two_tower|ranker: fit, select on validation, test, write metrics.json."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from recsys.utils.artifacts import write_json_atomic
from recsys.utils.hydra_helpers import CONFIG_PATH, instantiate_list, print_summary
from recsys.utils.trainer_setup import fit_report, fit_report_keys, instantiate_trainer

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    # shapes only the data knows (e.g. the retrieval model's dim for a ranker)
    inputs = datamodule.model_inputs() if hasattr(datamodule, "model_inputs") else {}
    dataset_dir = str(Path(datamodule.processed_dir).resolve())  # checkpoints work from any cwd
    model = hydra.utils.instantiate(cfg.model, dataset_dir=dataset_dir, **inputs)
    trainer: L.Trainer = instantiate_trainer(
        cfg.trainer,
        callbacks=instantiate_list(cfg.get("callbacks")),
        logger=instantiate_list(cfg.get("logger")),
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback else ""
    metrics: dict[str, Any] = {
        "best_checkpoint": best,
        "val_best": float(callback.best_model_score)
        if callback and callback.best_model_score is not None
        else None,
        **fit_report(trainer, time.perf_counter() - started),
    }
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics = {
            **model.test_results,
            "split": "test",
            "n_users": datamodule.dataset.n_users,
            "n_items": datamodule.dataset.n_items,
            **metrics,
        }
        if not trainer.is_global_zero:  # every rank holds the reduced metrics; one writes them
            return metrics
        write_json_atomic(output_dir / "metrics.json", metrics)
        shown = {
            k: v
            for k, v in metrics.items()
            if k.endswith(("@10", "/mrr", "@100")) or k in ("n_users", *fit_report_keys)
        }
        print_summary(f"test metrics ({output_dir / 'metrics.json'})", shown)
        print(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The number a sweeper maximizes: a metrics.json key, or the best validation score when
    ``optimized_metric`` names the checkpoint monitor (test metrics must not drive selection)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name in metrics:
        return float(metrics[name])
    if name == cfg.model.get("monitor"):
        if metrics.get("val_best") is None:  # validation was off (trainer.limit_val_batches=0)
            log.warning("no validation score for optimized_metric %s: nothing to optimize", name)
            return None
        return float(metrics["val_best"])
    raise KeyError(f"optimized_metric {name!r} is not among this run's metrics")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    main()
