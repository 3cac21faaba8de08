"""Interaction filters: time, rating, verified purchase, duplicate pairs, iterative k-core.

Each step is a small vectorized function that reports how many rows it dropped, so the
prepared dataset's manifest can account for every raw record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd


def to_epoch_ms(value: str | int | float | None) -> int | None:
    """A date string (UTC) or an epoch-millisecond number as epoch milliseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return int(value)
    return int(pd.Timestamp(value, tz="UTC").value // 1_000_000)


@dataclass
class InteractionFilters:
    """The seed's Amazon rules made exact; every threshold may be switched off with null/0/false."""

    min_timestamp: str | int | None = "2015-01-01"
    min_rating: float | None = 3.0
    require_verified: bool = True
    deduplicate: bool = True
    kcore: int = 5

    def apply_row_filters(self, block: pd.DataFrame, stats: Counter) -> pd.DataFrame:
        """Row-local filters, applied per streamed block to keep memory bounded."""
        keep = np.ones(len(block), dtype=bool)
        min_ts = to_epoch_ms(self.min_timestamp)
        if min_ts is not None:
            step = keep & (block["timestamp"].to_numpy() < min_ts)
            stats["dropped_before_min_timestamp"] += int(step.sum())
            keep &= ~step
        if self.min_rating is not None:
            step = keep & ~(block["rating"].to_numpy() >= self.min_rating)
            stats["dropped_low_rating"] += int(step.sum())
            keep &= ~step
        if self.require_verified:
            step = keep & ~block["verified"].to_numpy(dtype=bool)
            stats["dropped_unverified"] += int(step.sum())
            keep &= ~step
        return block[keep] if not keep.all() else block


def first_occurrence_mask(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """True for the earliest row of each (user, item) pair; ties keep the earlier source row."""
    n = len(users)
    order = np.lexsort((np.arange(n), timestamps, items, users))
    u, i = users[order], items[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Rows of the k-core: repeat dropping users and items with < k rows until nothing changes.

    Returns the mask and the number of passes it took to reach the fixed point.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep, 0
    n_users, n_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    passes = 0
    while True:
        passes += 1
        user_counts = np.bincount(users[keep], minlength=n_users)
        item_counts = np.bincount(items[keep], minlength=n_items)
        new_keep = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if np.array_equal(new_keep, keep):
            return keep, passes
        keep = new_keep


def apply_pair_filters(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, filters: InteractionFilters, stats: Counter
) -> np.ndarray:
    """Duplicate removal then k-core over integer-coded interactions; returns the rows kept."""
    keep = np.ones(len(users), dtype=bool)
    if filters.deduplicate:
        keep = first_occurrence_mask(users, items, timestamps)
        stats["dropped_duplicates"] += int((~keep).sum())
    if filters.kcore and filters.kcore > 1:
        idx = np.flatnonzero(keep)
        core, passes = kcore_mask(users[idx], items[idx], filters.kcore)
        stats["dropped_kcore"] += int((~core).sum())
        stats["kcore_passes"] = passes
        keep[idx[~core]] = False
    return keep
