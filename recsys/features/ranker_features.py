"""Dense features of (user, retrieved candidate) pairs for the ranker.

The same functions run when building ranker training data and inside the serving graph, so a
feature can never mean one thing in training and another online.

- ``score``: the retrieval inner product (cosine of unit vectors)
- ``rank``: log1p of the candidate's 0-based position in the retrieved list
- ``log_popularity``: log1p(train interactions of the item)
- ``recent_popularity``: log1p(interactions of the item in the ``window`` before the request time;
  "now" = the end of the data at serving time). Retrieval has no notion of time; catalogs with
  releases (films, products) drift, and this is where a ranker can add what retrieval lacks.
- ``text_similarity``: mean cosine between the candidate's text embedding and the user's last
  ``n`` history items' text embeddings
- ``is_cold``: 1 for items unseen in training (their embedding comes from text alone)
- ``transition``: log1p(how often the candidate followed one of the user's last 3 items within 3
  steps in the known sequences): item-to-item sequential co-occurrence, a classic collaborative
  signal the neural towers smooth away (measured on ML-100K: +6% two-stage ndcg@10 on its own)
- ``category_share``, ``category_recency``: the user's history in the candidate's categories
  (``recsys.features.category_features``); 0 where the data has no categories
- ``item_age``: log1p(days since the item's first interaction before the request), 0 for an item
  no one has interacted with before it (and on files whose time is an ordinal). With
  ``recent_popularity`` it tells a new release that others have just started on from an old
  item, which no training interaction of a cold item can
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset, flatten_lists, item_arrays
from recsys.data.splitting import HELD_OUT, user_bounds
from recsys.features.category_features import (
    CROSSES,
    POPULARITY_CROSSES,
    POPULARITY_FLOOR,
    ItemCategories,
    category_crosses,
    category_popularity_crosses,
    category_totals,
    history_categories,
)
from recsys.features.rows import gather_rows

FEATURES = (
    "score",
    "rank",
    "log_popularity",
    "recent_popularity",
    "text_similarity",
    "is_cold",
    "transition",
    *CROSSES,
    "item_age",
    *POPULARITY_CROSSES,  # after item_age: earlier rankers' feature columns keep their places
)
MS_PER_DAY = 86_400_000


def feature_columns(names: list[str] | tuple[str, ...]) -> list[int]:
    """Where each named feature sits in the [.., len(FEATURES)] feature tensor (a ranker's input)."""
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown ranker features {unknown}; known: {list(FEATURES)}")
    return [FEATURES.index(name) for name in names]


_TS_BITS = 42  # milliseconds up to year 2109; item_idx < 2**21 keeps keys inside int64
_ROW_SEARCH_MAX = 32  # ItemTransitions.counts searches row by row up to this many source items


def _per_item(items: np.ndarray, as_of: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """int64 items and request times, a time a row of items ([B] against [B, K]) broadcast over it."""
    items = np.asarray(items, dtype=np.int64)
    as_of = np.asarray(as_of, dtype=np.int64)
    return items, as_of[:, None] if as_of.ndim == 1 and items.ndim == 2 else as_of


@dataclass
class InteractionTimeline:
    """All known (item, time) interactions, sorted: per-item counts in a trailing window, vectorized."""

    keys: np.ndarray  # item_idx << 42 | timestamp_ms, sorted

    @classmethod
    def from_arrays(cls, items: np.ndarray, timestamps_ms: np.ndarray) -> InteractionTimeline:
        items = np.asarray(items, dtype=np.int64)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        if len(items) and items.max() >= 1 << (63 - _TS_BITS):
            raise ValueError(f"item_idx {items.max()} too large for the timeline's packed keys (< 2**21)")
        if len(ts) and (ts.min() < 0 or ts.max() >= 1 << _TS_BITS):
            raise ValueError("timestamps must be milliseconds in [0, 2**42)")
        return cls(np.sort((items << _TS_BITS) | ts))

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> InteractionTimeline:
        """Every known interaction of the dataset (all roles but held-out ones): each request
        counts only those strictly before its own time, whichever split it belongs to."""
        known = known_interactions(dataset, ["item_idx", "timestamp"])
        return cls.from_arrays(known["item_idx"], known["timestamp"])

    @property
    def end(self) -> int:
        """One millisecond after the last interaction: "now" for serving."""
        mask = (1 << _TS_BITS) - 1
        return int((self.keys & mask).max()) + 1 if len(self.keys) else 0

    def age_days(self, items: np.ndarray, as_of: np.ndarray | int) -> np.ndarray:
        """Days from each item's first interaction strictly before ``as_of`` to ``as_of`` (−1: none);
        ``as_of`` broadcasts over items' rows like ``counts``."""
        items, as_of = _per_item(items, as_of)
        if not len(self.keys):
            return np.full(items.shape, -1.0, dtype=np.float32)
        key = self.keys[np.searchsorted(self.keys, items << _TS_BITS).clip(max=len(self.keys) - 1)]
        first = key & ((1 << _TS_BITS) - 1)
        seen = ((key >> _TS_BITS) == items) & (first < as_of)
        return np.where(seen, (as_of - first) / MS_PER_DAY, -1.0).astype(np.float32)

    def counts(self, items: np.ndarray, as_of: np.ndarray | int, window_ms: int | None) -> np.ndarray:
        """Interactions of ``items`` in [as_of − window, as_of) (all before ``as_of`` when the window
        is None); ``as_of`` broadcasts over items' rows."""
        if window_ms is None:
            window_ms = 1 << _TS_BITS
        items, as_of = _per_item(items, as_of)
        hi = (items << _TS_BITS) | np.clip(as_of, 0, (1 << _TS_BITS) - 1)
        lo = (items << _TS_BITS) | np.clip(as_of - window_ms, 0, (1 << _TS_BITS) - 1)
        return np.searchsorted(self.keys, hi) - np.searchsorted(self.keys, lo)


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


def last_items(history: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] the last ``n`` items of right-padded histories, most recent first; 0 where absent."""
    pos = lengths[:, None] - 1 - torch.arange(n, device=history.device)[None, :]
    valid = pos >= 0
    return history.gather(1, pos.clamp(min=0)) * valid


@dataclass
class ItemFeatureTables:
    """Per-item_idx arrays the features read (rows 0/1 are padding/cold)."""

    log_popularity: torch.Tensor  # [n + 2]
    is_cold: torch.Tensor  # [n + 2]
    text: torch.Tensor  # [n + 2, text_dim], unit rows
    categories: ItemCategories  # [n + 2, width] codes

    @cached_property
    def train_count(self) -> torch.Tensor:
        return torch.expm1(self.log_popularity)

    @cached_property
    def category_totals(self) -> torch.Tensor:
        """Computed once per table (a pass over every item; tables with new items are new objects)."""
        return category_totals(self.categories, self.train_count)

    @classmethod
    def from_arrays(
        cls, train_count: np.ndarray, is_warm: np.ndarray, text: np.ndarray, categories: ItemCategories
    ) -> ItemFeatureTables:
        """From per-item_idx arrays (n + 2 rows), as ``item_arrays`` returns them."""
        return cls(
            torch.from_numpy(np.log1p(np.asarray(train_count, dtype=np.float32))),
            torch.from_numpy((~np.asarray(is_warm, dtype=bool)).astype(np.float32)),
            torch.as_tensor(np.asarray(text, dtype=np.float32)),
            categories,
        )

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> ItemFeatureTables:
        arrays = item_arrays(dataset)
        items = dataset.items
        categories = ItemCategories.from_lists(
            items["item_idx"].to_numpy(), items["categories"].tolist(), len(arrays["is_warm"])
        )
        text = dataset.text_embeddings(mmap=False)
        return cls.from_arrays(arrays["train_count"], arrays["is_warm"], text, categories)


def candidate_features(
    tables: ItemFeatureTables,
    candidates: torch.Tensor,
    scores: torch.Tensor,
    recent_counts: torch.Tensor,
    transitions: ItemTransitions | TimedTransitions,
    history: torch.Tensor,
    lengths: torch.Tensor,
    last_n: int = 5,
    as_of: np.ndarray | None = None,
    popularity: torch.Tensor | None = None,
    age_days: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, K, len(FEATURES)] for candidate item_idx [B, K] of users with right-padded ``history``.

    ``as_of`` [B] (request times) feeds timed transitions; ``popularity`` [B, K] (interaction
    counts before each request) replaces the tables' train-count popularity when given;
    ``age_days`` [B, K] (``InteractionTimeline.age_days`` at each request, −1: none; None: no
    clock) feeds ``item_age``.
    """
    batch, k = candidates.shape
    rank = torch.log1p(torch.arange(k, dtype=torch.float32, device=candidates.device)).expand(batch, k)
    recent_first = last_items(history, lengths, max(transitions.window, last_n))  # one gather for both
    follows = transitions.counts(recent_first[:, : transitions.window].numpy(), candidates.numpy(), as_of)
    log_popularity = (
        gather_rows(tables.log_popularity, candidates)
        if popularity is None
        else torch.log1p(popularity.float())
    )
    last = recent_first[:, :last_n]
    valid = last > 0
    last_texts = gather_rows(tables.text, last) * valid[..., None]
    profile = last_texts.sum(dim=1) / valid.sum(dim=1, keepdim=True).clamp(min=1)
    text_sim = torch.einsum("bkd,bd->bk", gather_rows(tables.text, candidates), profile)
    if tables.categories.vocabulary:
        summary = history_categories(tables.categories, history, lengths)  # one pass for all four
        share, recency = category_crosses(tables.categories, candidates, history, lengths, summary)
        favoured, staying = category_popularity_crosses(
            tables.categories,
            tables.train_count,
            tables.category_totals,
            candidates,
            history,
            lengths,
            summary,
        )
    else:  # no categories (or a serving ranker that reads no cross: the graph leaves them out)
        share = recency = torch.zeros(candidates.shape)
        favoured = staying = torch.full(candidates.shape, math.log(POPULARITY_FLOOR))
    return torch.stack(
        [
            scores.float(),
            rank,
            log_popularity,
            torch.log1p(recent_counts.float()),
            text_sim,
            gather_rows(tables.is_cold, candidates),
            torch.log1p(torch.from_numpy(follows)),
            share,
            recency,
            item_age(age_days) if age_days is not None else torch.zeros(candidates.shape),
            favoured,
            staying,
        ],
        dim=-1,
    )


def item_age(age_days: torch.Tensor) -> torch.Tensor:
    """The ``item_age`` feature of ``InteractionTimeline.age_days`` values: log1p(days), 0 for none."""
    return torch.log1p(age_days.float().clamp(min=0))
