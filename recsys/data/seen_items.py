"""What each user has already interacted with before a split's targets: excluded from their lists.

Shared by evaluation (full-catalog ranking), candidate building and the serving bundle, so it
lives with the data it is derived from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import PreparedDataset
from recsys.data.splitting import ragged_indices


@dataclass
class SeenItems:
    """CSR of the items seen before a target: one entry per row of a split (``for_split``: a user
    may have several rows, each with its own past) or per user (``all_interactions``)."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_pairs(cls, keys: np.ndarray, items: np.ndarray, n_keys: int) -> SeenItems:
        key = np.unique(keys.astype(np.int64) * (1 << 32) + items.astype(np.int64))
        u, i = key >> 32, key & 0xFFFFFFFF
        indptr = np.zeros(n_keys + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_keys), out=indptr[1:])
        return cls(indptr, i.astype(np.int64))

    @classmethod
    def empty(cls, n_keys: int) -> SeenItems:
        return cls(np.zeros(n_keys + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def for_split(cls, dataset: PreparedDataset, split: str) -> SeenItems:
        """For each row of ``split`` (in the split's order), every item its user interacted with
        before the row's target (any role: train, earlier targets, history-only), read off the
        interactions table by the row's position. Nothing when the dataset keeps seen items in the
        lists (``exclude_seen`` false)."""
        rows = dataset.read_split(split, ["user_idx", "position"])
        if not dataset.exclude_seen:
            return cls.empty(len(rows))
        seq = dataset.interactions(["user_idx", "item_idx"])
        seq_users = seq["user_idx"].to_numpy()
        starts = np.searchsorted(seq_users, rows["user_idx"].to_numpy(), side="left")
        ends = rows["position"].to_numpy()
        lengths = ends - starts
        keys = np.repeat(np.arange(len(rows)), lengths)
        items = seq["item_idx"].to_numpy()[ragged_indices(starts, lengths)]
        return cls.from_pairs(keys, items, len(rows))

    @classmethod
    def all_interactions(cls, dataset: PreparedDataset) -> SeenItems:
        """Every item each user ever interacted with: what serving excludes (nothing when the
        dataset keeps seen items in the lists)."""
        if not dataset.exclude_seen:
            return cls.empty(dataset.n_users)
        seq = dataset.interactions(["user_idx", "item_idx"])
        return cls.from_pairs(seq["user_idx"].to_numpy(), seq["item_idx"].to_numpy(), dataset.n_users)

    def batch(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in batch, item_idx) pairs for the given keys (split rows or users, as built)."""
        starts, ends = self.indptr[keys], self.indptr[keys + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(keys)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.indices[np.repeat(starts, lengths) + offsets]
