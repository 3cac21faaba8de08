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
  signal the neural towers smooth away (measured on ML-100K: +6% two-stage ndcg@10 on its own),
  counted in ``recsys.features.transitions``
- ``category_share``, ``category_recency``, ``category_popularity``, ``last_category_popularity``:
  the user's history in the candidate's categories (``recsys.features.category_features``); 0
  (the popularity ones: log 1e-6) where the data has no categories
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
import torch

from recsys.data.dataset import PreparedDataset, item_arrays
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
from recsys.features.transitions import ItemTransitions, TimedTransitions, known_interactions

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
