"""python -m recsys.evaluate ckpt_path=… [ranker_ckpt=…]: every test metric of a trained model.

Full-catalog test metrics of the two-tower checkpoint and the popularity baseline (and, with
``ranker_ckpt``, of the two-stage pipeline on the same users), printed as one table and written
to ``metrics.json`` and ``curves.json`` with figures under ``figures/`` (``recsys.evaluation.plots``).

Evaluation reads the dataset's test split rather than a serving bundle: a bundle's histories
include every known interaction, test targets too, so it cannot be scored without leakage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from recsys.data.dataset import FIRST_ITEM_IDX, item_arrays
from recsys.evaluation import plots
from recsys.models.two_tower import TwoTowerModule
from recsys.utils.artifacts import checkpoint_file, write_json_atomic
from recsys.utils.hydra_helpers import CONFIG_PATH
from recsys.utils.trainer_setup import instantiate_trainer

STAGES = {  # metrics.json prefix -> column title
    "two_stage": "2-stage",
    "retrieval": "retrieval",
    "popularity": "popular",
    "retrieval_warm": "warm tgt",
    "retrieval_cold": "cold tgt",
}
ROWS = ("recall@10", "ndcg@10", "mrr", "recall@50", "recall@100", "coverage@10", "diversity@10", "novelty@10")


def two_stage_results(trainer_cfg: DictConfig, retrieval_ckpt: Path, ranker_ckpt: Path) -> tuple[dict, dict]:
    """Test the ranker on the retrieval checkpoint's candidates, built as when it was trained."""
    from recsys.data.datamodules import CandidateDataModule
    from recsys.models.ranker import RankerModule, candidate_settings

    settings = candidate_settings(ranker_ckpt)
    datamodule = CandidateDataModule(**{**settings, "retrieval_ckpt": str(retrieval_ckpt)})
    ranker = RankerModule.load_from_checkpoint(ranker_ckpt, map_location="cpu", weights_only=True)
    trainer = instantiate_trainer(trainer_cfg, logger=False, callbacks=[])
    trainer.test(ranker, datamodule=datamodule)
    keep = {k: v for k, v in ranker.test_results.items() if not k.startswith("retrieval")}
    return keep, {"two_stage": ranker.test_details["two_stage"]}


def gate_values(model: TwoTowerModule) -> np.ndarray:
    """The gate α of every catalog item (eval mode: no ID dropout)."""
    tower = model.item_tower.eval()
    rows = torch.arange(FIRST_ITEM_IDX, model.n_items + FIRST_ITEM_IDX, device=model.device)
    with torch.no_grad():
        alpha = torch.cat([tower.fuse(rows[i : i + 65_536])[1].float() for i in range(0, len(rows), 65_536)])
    return alpha.cpu().numpy()


def draw(out: Path, details: dict, model: TwoTowerModule, train_count: np.ndarray) -> list[Path]:
    figures = out / "figures"
    counts = {
        s: np.asarray(d["top10_counts"])[FIRST_ITEM_IDX:] for s, d in details.items() if "top10_counts" in d
    }
    catalog_counts = train_count[FIRST_ITEM_IDX:]
    return [
        plots.rank_curves(details, figures / "curves.png"),
        plots.cold_warm({k: v for k, v in details.items() if k != "popularity"}, figures / "cold_warm.png"),
        plots.gate_by_popularity(gate_values(model), catalog_counts, figures / "gate_by_popularity.png"),
        plots.recommended_popularity(counts, catalog_counts, figures / "recommended_popularity.png"),
    ]


def print_table(metrics: dict[str, Any]) -> None:
    stages = [s for s in STAGES if any(f"{s}/{r}" in metrics for r in ROWS)]
    table = Table(title="test metrics (full catalog, seen items excluded, ties pessimistic)")
    table.add_column("metric", no_wrap=True)
    for stage in stages:
        table.add_column(STAGES[stage], justify="right", no_wrap=True)
    for row in ROWS:
        cells = [metrics.get(f"{s}/{row}") for s in stages]
        if any(c is not None for c in cells):
            table.add_row(row, *("" if c is None else f"{c:.4f}" for c in cells))
    Console().print(table)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt = checkpoint_file(cfg.get("ckpt_path"), "ckpt_path", "evaluate")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    model = TwoTowerModule.load_from_checkpoint(
        ckpt, dataset_dir=str(datamodule.processed_dir), weights_only=True
    )
    trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = {**model.test_results}
    details = dict(model.test_details)
    if cfg.get("ranker_ckpt"):
        two_stage, ranker_details = two_stage_results(
            cfg.trainer, ckpt, checkpoint_file(cfg.ranker_ckpt, "ranker_ckpt", "evaluate")
        )
        metrics.update(two_stage)
        details.update(ranker_details)
    metrics.update(
        split="test",
        n_users=datamodule.dataset.n_users,
        n_items=datamodule.dataset.n_items,
        checkpoint=str(ckpt),
        ranker_checkpoint=cfg.get("ranker_ckpt"),
    )
    if not trainer.is_global_zero:  # metrics are reduced over ranks; rank 0 writes them
        return metrics
    out = Path(cfg.paths.output_dir)
    if cfg.get("figures", True):
        drawn = draw(out, details, model, item_arrays(datamodule.dataset)["train_count"])
        metrics["figures"] = [str(p) for p in drawn]
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "curves.json", {k: v["curves"] for k, v in details.items()})
    print_table(metrics)
    print(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
