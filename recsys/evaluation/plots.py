"""Evaluation figures (matplotlib, PNG), drawn from what ``recsys.evaluate`` measured.

- ``curves.png``: recall@K and ndcg@K for K = 1…1000 (log K), one line per stage
- ``cold_warm.png``: recall@K of users whose target is a cold vs a warm item
- ``gate_by_popularity.png``: the item tower's gate α (weight of the ID embedding) per item
  popularity bucket. A cold item's ID row is all zeros, so it is represented by its text whatever
  α is; the plot shows how much warm items of each popularity lean on their ID
- ``recommended_popularity.png``: popularity of the items in users' top-10 vs the catalog's
  (popularity bias)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

STAGE_STYLE = {"two_stage": "C2", "retrieval": "C0", "popularity": "C7"}
BUCKETS = ((0, 0, "cold (0)"), (1, 4, "1–4"), (5, 19, "5–19"), (20, 99, "20–99"), (100, None, "100+"))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader never sees half a PNG
    return path


def rank_curves(details: dict[str, dict], path: Path, segment: str = "all") -> Path:
    """``details``: {stage: {"curves": {segment: {"recall": [...], "ndcg": [...]}}}}."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage, d in details.items():
        curve = d["curves"].get(segment)
        if not curve:
            continue
        ks = np.arange(1, len(curve["recall"]) + 1)
        for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
            ax.plot(ks, curve[metric], label=stage, color=STAGE_STYLE.get(stage))
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        ax.set(xscale="log", xlabel="K", ylabel=f"{metric}@K", title=f"{metric}@K, full catalog")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def cold_warm(details: dict[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, d in details.items():
        for segment, style in (("warm", "-"), ("cold", "--")):
            curve = d["curves"].get(segment)
            if curve:
                ks = np.arange(1, len(curve["recall"]) + 1)
                ax.plot(
                    ks,
                    curve["recall"],
                    style,
                    color=STAGE_STYLE.get(stage),
                    label=f"{stage}, {segment} targets",
                )
    ax.set(xscale="log", xlabel="K", ylabel="recall@K", title="cold vs warm target items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def gate_by_popularity(alpha: np.ndarray, train_count: np.ndarray, path: Path) -> Path:
    """``alpha``/``train_count`` per catalog item."""
    groups, labels = [], []
    for lo, hi, label in BUCKETS:
        mask = (train_count >= lo) & (train_count <= (hi if hi is not None else np.inf))
        if mask.any():
            groups.append(alpha[mask])
            labels.append(f"{label}\nn={int(mask.sum()):,}")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot(groups, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set(ylim=(0, 1), xlabel="training interactions of the item", ylabel="gate α (ID weight)")
    ax.set_title("item tower gate α by popularity (cold items: ID row is zero, text only)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def recommended_popularity(top10_counts: dict[str, np.ndarray], train_count: np.ndarray, path: Path) -> Path:
    """Histogram of log10(1 + train count) of top-10 items (weighted by appearances) per stage."""
    bins = np.linspace(0, np.log10(train_count.max() + 1) + 0.1, 30)
    value = np.log10(train_count + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(value, bins=bins, density=True, color="0.85", label="catalog")
    for stage, counts in top10_counts.items():
        if counts.sum() > 0:
            ax.hist(value, bins=bins, weights=counts, density=True, histtype="step", lw=2,
                    color=STAGE_STYLE.get(stage), label=f"{stage} top-10")  # fmt: skip
    ax.set(
        xlabel="log10(1 + training interactions)", ylabel="density", title="popularity of recommended items"
    )
    ax.legend()
    return _save(fig, path)
