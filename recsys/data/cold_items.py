"""Cold-item holdout: turn some test-target items into new releases the model never trained on.

A cold-start evaluation needs items the model has never seen interacted with, but which users
then do pick. ``ColdItemHoldout`` picks, with its own seed, a share of the items that are some
user's *test* target (and would be warm otherwise) and keeps every interaction with them out of
the training rows: not a training target, not in any training history. Val and test rows stay
exactly as without the holdout, so the held-out items are what a model meets after it was
trained: releases users consumed since, known to the model only by their metadata text. Val
rows with such a target give validation a cold share of its own, so choices about cold items
can be made on validation like every other choice. Nothing about the selection uses a model.

Held out alone, the cold items would all be targets, so "put every cold item first" would score
a large cold recall without knowing anything. ``distractors`` strips as many other items (per
cold test target), never a val or test target, of their training interactions too: the cold
pool then holds releases nobody picks, as a catalog does, and ``cold_first_random`` (recall@k of
a random order of the cold items placed first, ``k / cold items``) is the baseline a cold metric
must beat.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from recsys.data.splitting import TEST, TRAIN, VAL


@dataclass(kw_only=True)
class ColdItemHoldout:
    """``fraction`` of the distinct warm test-target items become cold (at least one), and
    ``distractors`` × their test targets other warm items that no val or test row targets."""

    fraction: float
    distractors: float
    seed: int
    dir_suffix: str  # prepared next to the plain dataset, never over it

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"cold_items.fraction must be in (0, 1], got {self.fraction}")
        if self.distractors < 0:
            raise ValueError(f"cold_items.distractors must be >= 0, got {self.distractors}")

    def choose(self, sorted_items: np.ndarray, role: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(held-out item codes, distractor item codes). Held out: a seeded sample of the distinct
        test targets that would be warm (some train target) without the holdout; already-cold ones
        change nothing. Distractors: a seeded sample of the warm items no val or test row targets,
        ``distractors`` per held-out test target (all of them where there are fewer)."""
        warm = np.unique(sorted_items[role == TRAIN])
        candidates = np.intersect1d(sorted_items[role == TEST], warm)
        if len(candidates) == 0:
            raise ValueError("cold_items: the split has no warm test targets to hold out")
        n = max(1, round(self.fraction * len(candidates)))
        rng = np.random.default_rng(self.seed)
        held = np.sort(rng.choice(candidates, size=n, replace=False))
        n_targets = int(np.isin(sorted_items[role == TEST], held).sum())
        others = np.setdiff1d(warm, sorted_items[(role == TEST) | (role == VAL)])
        n_distractors = min(round(self.distractors * n_targets), len(others))
        return held, np.sort(rng.choice(others, size=n_distractors, replace=False))

    def training_mask(
        self, sorted_items: np.ndarray, role: np.ndarray, stats: Counter | None = None
    ) -> np.ndarray:
        """Interactions that may build training rows: every one except the held-out items' and
        the distractors'."""
        held, distractors = self.choose(sorted_items, role)
        cold = np.isin(sorted_items, held)
        distracting = np.isin(sorted_items, distractors)
        if stats is not None:
            stats["cold_holdout_items"] = int(np.unique(sorted_items[cold]).size)
            stats["cold_holdout_test_targets"] = int((cold & (role == TEST)).sum())
            stats["cold_holdout_val_targets"] = int((cold & (role == VAL)).sum())
            stats["cold_holdout_train_interactions"] = int((cold & (role == TRAIN)).sum())
            stats["cold_holdout_distractor_items"] = len(distractors)
            stats["cold_holdout_distractor_train_interactions"] = int((distracting & (role == TRAIN)).sum())
        return ~(cold | distracting)
