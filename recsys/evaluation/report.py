"""How an evaluation is shown: the metrics table and the figures (``recsys.evaluate`` writes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from recsys.data.dataset import FIRST_ITEM_IDX
from recsys.data.preparation import peak_rss_gib
from recsys.evaluation import plots
from recsys.utils.artifacts import write_json_atomic
from recsys.utils.hydra_helpers import print_summary
from recsys.utils.trainer_setup import fit_report_keys

STAGES = {  # metrics.json prefix -> column title
    "two_stage": "2-stage",
    "retrieval": "retrieval",
    "popularity": "popular",
    "retrieval_warm": "warm tgt",
    "retrieval_cold": "cold tgt",
}
ROWS = ("recall@10", "ndcg@10", "mrr", "recall@50", "recall@100", "coverage@10", "diversity@10", "novelty@10")


def draw(out: Path, details: dict, gates: np.ndarray, train_count: np.ndarray) -> list[Path]:
    """Every figure of an evaluation under ``out/figures``; ``gates``: the item tower's α per item."""
    figures = out / "figures"
    counts = {
        s: np.asarray(d["top10_counts"])[FIRST_ITEM_IDX:] for s, d in details.items() if "top10_counts" in d
    }
    catalog_counts = train_count[FIRST_ITEM_IDX:]
    return [
        plots.rank_curves(details, figures / "curves.png"),
        plots.cold_warm({k: v for k, v in details.items() if k != "popularity"}, figures / "cold_warm.png"),
        plots.gate_by_popularity(gates, catalog_counts, figures / "gate_by_popularity.png"),
        plots.recommended_popularity(counts, catalog_counts, figures / "recommended_popularity.png"),
    ]


def print_table(metrics: dict[str, Any]) -> None:
    stages = [s for s in STAGES if any(f"{s}/{r}" in metrics for r in ROWS)]
    table = Table(title="test metrics (full catalog, seen items excluded, ties pessimistic)")
    table.add_column("metric", no_wrap=True)
    for stage in stages:
        table.add_column(STAGES[stage], justify="right", no_wrap=True)
    for row in ROWS:
        cells = [metrics.get(f"{s}/{row}", _cut_mrr(metrics, s) if row == "mrr" else None) for s in stages]
        if any(c is not None for c in cells):
            table.add_row(row, *("" if c is None else f"{c:.4f}" for c in cells))
    Console().print(table)


def _cut_mrr(metrics: dict[str, Any], stage: str) -> float | None:
    """``two_stage/mrr@K`` (MRR cut at the K re-ranked candidates) for the table's mrr row."""
    return next((v for k, v in metrics.items() if k.startswith(f"{stage}/mrr@")), None)


def write_report(
    out: Path, metrics: dict[str, Any], details: dict, gates: np.ndarray | None, train_count: np.ndarray
) -> dict[str, Any]:
    """metrics.json, curves.json and (when ``gates`` are given) the figures; prints the table."""
    if gates is not None:
        metrics["figures"] = [str(p) for p in draw(out, details, gates, train_count)]
    write_json_atomic(out / "metrics.json", metrics)
    write_json_atomic(out / "curves.json", {k: v["curves"] for k, v in details.items()})
    print_table(metrics)
    print(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


def write_train_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """A training run's metrics.json, and a summary of the headline figures on the console."""
    write_json_atomic(path, metrics)
    headline = ("@10", "/mrr", "@100", "@200")
    shown = {k: v for k, v in metrics.items() if k.endswith(headline) or k in ("n_users", *fit_report_keys)}
    print_summary(f"test metrics ({path})", shown)
    print(json.dumps(metrics, indent=1, sort_keys=True))


def train_summary(model: Any, dataset: Any, derived: dict[str, Any], fit: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a training run: the test results, validation at the selected checkpoint,
    the derived values, what the dataset holds and the fit report."""
    return {
        **model.test_results,
        **{k: float(v) for k, v in getattr(model, "val_at_best", {}).items()},
        **derived,
        "split": "test",
        "n_users": dataset.n_rows("test"),  # users the test metrics average over
        "n_users_dataset": dataset.n_users,
        "n_items": dataset.n_items,
        "exclude_seen": dataset.exclude_seen,
        **({"text_used": bool(model.hparams.use_text)} if "use_text" in model.hparams else {}),
        **fit,
        "peak_rss_gib": peak_rss_gib(),
    }
