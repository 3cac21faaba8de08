"""python -m recsys.evaluate ckpt_path=… [data=…]: full-catalog test metrics of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from recsys.models.two_tower import TwoTowerModule
from recsys.utils.artifacts import write_json_atomic
from recsys.utils.hydra_helpers import CONFIG_PATH, print_summary


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate needs ckpt_path=<a two-tower checkpoint>")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    model = TwoTowerModule.load_from_checkpoint(
        ckpt, dataset_dir=str(datamodule.processed_dir), weights_only=True
    )
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = {
        **model.test_results,
        "split": "test",
        "n_users": datamodule.dataset.n_users,
        "n_items": datamodule.dataset.n_items,
        "checkpoint": str(ckpt),
    }
    out = Path(cfg.paths.output_dir)
    write_json_atomic(out / "metrics.json", metrics)
    print_summary(
        f"test metrics ({out / 'metrics.json'})",
        {k: v for k, v in metrics.items() if k.endswith(("@10", "/mrr", "@100"))},
    )
    print(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
