"""Cold-item holdout: turn some test-target items into new releases the model never trained on.

A cold-start evaluation needs items the model has never seen interacted with, but which users
then do pick. ``ColdItemHoldout`` picks, with its own seed, a share of the items that are some
user's *test* target (and would be warm otherwise) and keeps every interaction with them out of
the training rows: not a training target, not in any training history. Val and test rows stay
exactly as without the holdout, so the held-out items are what a model meets after it was
trained: releases users consumed since, known to the model only by their metadata text. Val
rows with such a target give validation a cold share of its own, so choices about cold items
can be made on validation like every other choice. Nothing about the selection uses a model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from recsys.data.splitting import TEST, TRAIN, VAL


@dataclass
class ColdItemHoldout:
    """``fraction`` of the distinct warm test-target items become cold (at least one)."""

    fraction: float = 0.2
    seed: int = 0
    dir_suffix: str = "_cold_items"  # prepared next to the plain dataset, never over it

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"cold_items.fraction must be in (0, 1], got {self.fraction}")

    def choose(self, sorted_items: np.ndarray, role: np.ndarray) -> np.ndarray:
        """The held-out item codes: a seeded sample of the distinct test targets that would be
        warm (some train target) without the holdout; already-cold ones change nothing."""
        candidates = np.intersect1d(sorted_items[role == TEST], sorted_items[role == TRAIN])
        if len(candidates) == 0:
            raise ValueError("cold_items: the split has no warm test targets to hold out")
        n = max(1, round(self.fraction * len(candidates)))
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(candidates, size=n, replace=False))

    def training_mask(
        self, sorted_items: np.ndarray, role: np.ndarray, stats: Counter | None = None
    ) -> np.ndarray:
        """Interactions that may build training rows: every one except the held-out items'."""
        cold = np.isin(sorted_items, self.choose(sorted_items, role))
        if stats is not None:
            stats["cold_holdout_items"] = int(np.unique(sorted_items[cold]).size)
            stats["cold_holdout_test_targets"] = int((cold & (role == TEST)).sum())
            stats["cold_holdout_val_targets"] = int((cold & (role == VAL)).sum())
            stats["cold_holdout_train_interactions"] = int((cold & (role == TRAIN)).sum())
        return ~cold
