"""Category crosses of (user, candidate) pairs: side information the towers only see through text.

- ``category_share``: the share of the user's history in the candidate's categories (mean over the
  candidate's categories of (history items in the category) / (history length)); 0 for an item
  without categories
- ``category_recency``: 1 / (1 + steps back to the user's latest history item that shares a
  category with the candidate), 1 for the last item, 0 where none does
- ``category_popularity``: log(1e-6 + Σ_g share(g) · P(candidate | g)) over the candidate's
  categories g, with share(g) the user's history share in g and P(candidate | g) the candidate's
  share of the training interactions of items in g: "a category the user favours, then a popular
  item within it", a product an MLP over the two factors only approximates
- ``last_category_popularity``: the same with share(g) = 1 for the categories of the user's last
  item (0 otherwise): users who stay in their last item's category

Positions, not clock time, so they mean the same on files whose time is an ordinal. Items carry
their categories as codes (``ItemCategories``): the prepared dataset's ``categories`` lists when
building ranker data, the bundle's items table in the serving graph, one function for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recsys.features.rows import gather_rows

CROSSES = ("category_share", "category_recency")  # the ranker features category_crosses returns
# category_popularity_crosses' (experiments/oracle_synthetic.py: what `synthetic`'s generator does)
POPULARITY_CROSSES = ("category_popularity", "last_category_popularity")
POPULARITY_FLOOR = 1e-6  # added before the log: an item outside every weighted category


@dataclass
class ItemCategories:
    """Category codes per item_idx row: ``codes`` [rows, width], code = vocabulary position + 1,
    0 = none (padding rows, items without categories, unused slots)."""

    codes: torch.Tensor
    vocabulary: tuple[str, ...]

    @classmethod
    def from_lists(
        cls, item_idx: np.ndarray, categories: Sequence[Sequence[str]], n_rows: int
    ) -> ItemCategories:
        vocabulary = tuple(sorted({str(c) for cats in categories for c in cats}))
        return cls(cls._encode(item_idx, categories, n_rows, vocabulary), vocabulary)

    @staticmethod
    def _encode(
        item_idx: np.ndarray, categories: Sequence[Sequence[str]], n_rows: int, vocabulary: tuple[str, ...]
    ) -> torch.Tensor:
        code = {c: i + 1 for i, c in enumerate(vocabulary)}
        known = [[code[str(c)] for c in cats if str(c) in code] for cats in categories]
        codes = np.zeros((n_rows, max((len(k) for k in known), default=0) or 1), dtype=np.int64)
        for row, item_codes in zip(np.asarray(item_idx), known, strict=True):
            codes[row, : len(item_codes)] = item_codes
        return torch.from_numpy(codes)

    def appended(self, categories: Sequence[Sequence[str]]) -> ItemCategories:
        """Rows for items added after training, one per list (categories outside the vocabulary
        dropped: no training list has taught the ranker anything about them)."""
        new = self._encode(np.arange(len(categories)), categories, len(categories), self.vocabulary)
        width = max(self.codes.shape[1], new.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
        return ItemCategories(torch.cat([pad(self.codes), pad(new)]), self.vocabulary)


def history_categories(
    table: ItemCategories, history: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the crosses read of right-padded ``history`` [B, L] of ``lengths`` [B], per category
    code ([B, codes + 1]; code 0 absorbs padding and items without categories): how many history
    items carry it, and the 1-based position of the latest that does (0: none)."""
    batch, n_codes = history.shape[0], len(table.vocabulary) + 1
    steps = torch.arange(history.shape[1], device=history.device)
    valid = steps[None, :] < lengths[:, None]  # [B, L]
    hist = gather_rows(table.codes, history) * valid[..., None]  # [B, L, M]
    flat = hist.reshape(batch, -1)
    counts = torch.zeros(batch, n_codes).scatter_add_(1, flat, torch.ones(flat.shape))
    position = ((steps + 1)[None, :, None] * (hist > 0)).reshape(batch, -1)  # 1-based, 0 = none
    latest = torch.zeros(batch, n_codes, dtype=torch.long).scatter_reduce_(1, flat, position, "amax")
    return counts, latest


def category_crosses(
    table: ItemCategories,
    candidates: torch.Tensor,
    history: torch.Tensor,
    lengths: torch.Tensor,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``category_share``, ``category_recency``), each [B, K], for candidate item_idx [B, K] of
    users with right-padded ``history`` [B, L] of ``lengths`` [B] (``summary``: their
    ``history_categories``, when already computed)."""
    batch = candidates.shape[0]
    counts, latest = summary if summary is not None else history_categories(table, history, lengths)
    cand = gather_rows(table.codes, candidates)  # [B, K, M]
    has = cand > 0
    lookup = cand.reshape(batch, -1)
    in_category = counts.gather(1, lookup).view(cand.shape) * has
    share = in_category.sum(-1) / has.sum(-1).clamp(min=1) / lengths.clamp(min=1)[:, None]
    last = (latest.gather(1, lookup).view(cand.shape) * has).amax(-1)  # [B, K] 1-based position
    back = (lengths[:, None] - last).float()  # 0: the last history item
    recency = torch.where(last > 0, 1.0 / (1.0 + back), torch.zeros_like(back))
    return share.float(), recency


def category_totals(table: ItemCategories, train_count: torch.Tensor) -> torch.Tensor:
    """[codes + 1]: the training interactions of the items in each category (code 0: none)."""
    codes = table.codes
    counts = train_count.float()[:, None].expand(codes.shape) * (codes > 0)
    return torch.zeros(len(table.vocabulary) + 1).scatter_add_(0, codes.reshape(-1), counts.reshape(-1))


def category_popularity_crosses(
    table: ItemCategories,
    train_count: torch.Tensor,
    totals: torch.Tensor,
    candidates: torch.Tensor,
    history: torch.Tensor,
    lengths: torch.Tensor,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``category_popularity``, ``last_category_popularity``), each [B, K]; ``train_count``: the
    training interactions of each item_idx row, ``totals`` their ``category_totals``, ``summary``
    as for ``category_crosses``."""
    batch = candidates.shape[0]
    counts, latest = summary if summary is not None else history_categories(table, history, lengths)
    share = counts / lengths.clamp(min=1)[:, None]  # [B, codes + 1]: the user's share in each
    in_last = ((latest == lengths[:, None]) & (latest > 0)).float()  # the last item's categories
    cand = gather_rows(table.codes, candidates)  # [B, K, M]
    lookup = cand.reshape(batch, -1)
    within = gather_rows(train_count.float(), candidates)[..., None] / totals[cand].clamp(min=1.0)
    within = within * (cand > 0)  # [B, K, M]: P(candidate | each of its categories)
    favoured = (share.gather(1, lookup).view(cand.shape) * within).sum(-1)
    staying = (in_last.gather(1, lookup).view(cand.shape) * within).sum(-1)
    return torch.log(favoured + POPULARITY_FLOOR), torch.log(staying + POPULARITY_FLOOR)
