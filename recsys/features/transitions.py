"""Item-to-item transition counts, the ranker's ``transition`` feature: how often a candidate
followed one of the user's last items within ``window`` steps of the known sequences, counted over
the training histories (``ItemTransitions``) or as of each request (``TimedTransitions``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset, flatten_lists
from recsys.data.splitting import HELD_OUT, user_bounds

_ROW_SEARCH_MAX = 32  # ItemTransitions.counts searches row by row up to this many source items


@dataclass
class ItemTransitions:
    """Sparse counts of (earlier item -> later item) within ``window`` steps of a user's sequence."""

    matrix: sp.csr_matrix  # [n + 2, n + 2]
    window: int = 3

    def __post_init__(self) -> None:
        self.matrix.sum_duplicates()  # canonical: one sorted entry per (row, col)
        # row * n + col of every stored entry, ascending: one searchsorted answers any batch of
        # (row, col) lookups (scipy's fancy indexing cost 1.2 ms per request at 434K items)
        n = self.matrix.shape[1]
        rows = np.repeat(np.arange(self.matrix.shape[0], dtype=np.int64), np.diff(self.matrix.indptr))
        self._keys = rows * n + self.matrix.indices.astype(np.int64)

    @classmethod
    def from_dataset(
        cls, dataset: PreparedDataset, splits: tuple[str, ...] = ("train",), window: int = 3
    ) -> ItemTransitions:
        """Every row's target follows its last ``window`` history items (train rows cover every
        consecutive pair of the training sequences; val/test rows add their own targets)."""
        n = dataset.n_items + FIRST_ITEM_IDX
        sources, targets = [], []
        for split in splits:
            table = dataset.read_split(split, ["history", "target"])
            values, lengths = flatten_lists(table["history"])
            ends = np.cumsum(lengths)
            target = table["target"].to_numpy()
            for step in range(1, window + 1):
                ok = lengths >= step
                sources.append(values[ends[ok] - step])
                targets.append(target[ok])
        return cls.from_pairs(np.concatenate(sources), np.concatenate(targets), n, window)

    @classmethod
    def from_interactions(cls, dataset: PreparedDataset, window: int = 3) -> ItemTransitions:
        """Every known interaction's pairs: what serving, at the end of the data, knows."""
        source, target, _ = transition_pairs(dataset, window)
        return cls.from_pairs(source, target, dataset.n_items + FIRST_ITEM_IDX, window)

    @classmethod
    def from_pairs(cls, sources: np.ndarray, targets: np.ndarray, n: int, window: int) -> ItemTransitions:
        matrix = sp.csr_matrix((np.ones(len(sources), dtype=np.float32), (sources, targets)), shape=(n, n))
        return cls(matrix, window)

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """matrix[rows, cols] elementwise (any shape); 0 outside the matrix (items added later)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        n_rows, n_cols = self.matrix.shape
        known = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
        query = np.where(known, rows * n_cols + cols, -1)
        pos = np.searchsorted(self._keys, query).clip(max=max(len(self._keys) - 1, 0))
        if not len(self._keys):
            return np.zeros(query.shape, dtype=np.float32)
        hit = known & (self._keys[pos] == query)
        return np.where(hit, self.matrix.data[pos], 0).astype(np.float32)

    def counts(
        self, last_items: np.ndarray, candidates: np.ndarray, as_of: np.ndarray | None = None
    ) -> np.ndarray:
        """[B, K] sum over each user's ``last_items`` [B, n] (0 = none) of transitions to candidates
        (every pair the matrix holds: ``as_of`` is ignored)."""
        last_items, candidates = np.asarray(last_items), np.asarray(candidates)
        if last_items.size <= _ROW_SEARCH_MAX:
            return self._counts_by_row(last_items, candidates)
        return self.lookup(last_items[:, :, None], candidates[:, None, :]).sum(axis=1)

    def _counts_by_row(self, last_items: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``counts`` searching each source item's own (sorted, short) row of the matrix: for one
        serving request, 3 row searches touch a few cache lines where the global key search cost
        ~0.2 ms of cache misses at 434K items (9M keys)."""
        m = self.matrix
        out = np.zeros(candidates.shape, dtype=np.float32)
        for b, sources in enumerate(last_items):
            for row in sources:
                if not 0 <= row < m.shape[0]:  # items added after the matrix was built
                    continue
                lo, hi = m.indptr[row], m.indptr[row + 1]
                if lo == hi:
                    continue
                cols = m.indices[lo:hi]
                pos = np.searchsorted(cols, candidates[b]).clip(max=hi - lo - 1)
                out[b] += np.where(cols[pos] == candidates[b], m.data[lo:hi][pos], 0)
        return out


def known_interactions(dataset: PreparedDataset, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of the interactions every feature count sees: all but the held-out ones (cold_items)."""
    table = dataset.interactions([*columns, "role"])
    known = table["role"].to_numpy() != HELD_OUT
    return {name: table[name].to_numpy()[known] for name in columns}


def transition_pairs(dataset: PreparedDataset, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(earlier item, later item, later item's time) for every pair within ``window`` steps of a
    user's known sequence (held-out interactions left out, as if they had not happened)."""
    known = known_interactions(dataset, ["user_idx", "item_idx", "timestamp"])
    items, times = known["item_idx"].astype(np.int64), known["timestamp"]
    _, pos, _ = user_bounds(known["user_idx"])
    sources, targets, when = [], [], []
    for step in range(1, window + 1):
        later = np.flatnonzero(pos >= step)
        sources.append(items[later - step])
        targets.append(items[later])
        when.append(times[later])
    return np.concatenate(sources), np.concatenate(targets), np.concatenate(when)


@dataclass
class TimedTransitions:
    """Transition counts as of a request: only pairs whose later item came strictly before it.

    Keys pack (pair id, rank of the pair's time among all distinct times), sorted, so a batch of
    (source, candidate, as_of) lookups is three vectorized binary searches.
    """

    pairs: np.ndarray  # distinct source * n + target, sorted
    times: np.ndarray  # distinct timestamps, sorted
    keys: np.ndarray  # pair id << time_bits | time rank, sorted
    time_bits: int
    n: int
    window: int = 3

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset, window: int = 3) -> TimedTransitions:
        n = dataset.n_items + FIRST_ITEM_IDX
        source, target, when = transition_pairs(dataset, window)
        pairs, pair_id = np.unique(source * n + target, return_inverse=True)
        times, time_rank = np.unique(when, return_inverse=True)
        time_bits = max(len(times).bit_length(), 1)
        if len(pairs).bit_length() + time_bits > 62:
            raise ValueError(f"{len(pairs)} pairs × {len(times)} times do not fit the packed int64 keys")
        keys = np.sort((pair_id.astype(np.int64) << time_bits) | time_rank.astype(np.int64))
        return cls(pairs, times, keys, time_bits, n, window)

    def counts(
        self, last_items: np.ndarray, candidates: np.ndarray, as_of: np.ndarray | None = None
    ) -> np.ndarray:
        """[B, K] like ``ItemTransitions.counts``, counting pairs timed strictly before ``as_of`` [B]."""
        if as_of is None:
            raise ValueError("TimedTransitions.counts needs each request's time (as_of)")
        last_items = np.asarray(last_items, dtype=np.int64)[:, :, None]  # [B, w, 1]
        candidates = np.asarray(candidates, dtype=np.int64)[:, None, :]  # [B, 1, K]
        query = last_items * self.n + candidates
        if not len(self.pairs):
            return np.zeros((query.shape[0], query.shape[2]), dtype=np.float32)
        pid = np.searchsorted(self.pairs, query).clip(max=len(self.pairs) - 1)
        found = (last_items > 0) & (self.pairs[pid] == query)
        before = np.searchsorted(self.times, np.asarray(as_of, dtype=np.int64), side="left")[:, None, None]
        base = pid << self.time_bits
        count = np.searchsorted(self.keys, base | before) - np.searchsorted(self.keys, base)
        return np.where(found, count, 0).sum(axis=1).astype(np.float32)
