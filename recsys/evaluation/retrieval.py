"""Full-catalog ranking in chunks: exact target ranks and top-K lists, seen items excluded.

Hand-written rather than torchmetrics' retrieval metrics: those keep every (query, item) pair
in memory (users × items, 44 billion pairs at the reference scale) and treat scores ≤ 0 as
not retrieved. Here scores are produced one item chunk at a time and reduced on the fly to
(a) the number of items that outrank the target and (b) a running top-K.

Ties are ranked pessimistically: an item scoring exactly the target's score ranks above it.
A target the user has already interacted with (a repeat, kept when ``deduplicate=false``) is
excluded like every seen item, so it is a miss at every k (rank ``n_catalog``): serving never
shows it, and the two-stage lists built from these top-K lists cannot hold it either. Top-K
slots past the user's unseen items (tiny catalogs, large k) hold item 0 (padding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.dataset import FIRST_ITEM_IDX

# item_idx [M] -> scores [B, M]; must return a new tensor: the ranking masks it in place.
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RankResult:
    ranks: torch.Tensor  # [B] number of non-excluded items that outrank the target
    topk: torch.Tensor  # [B, K] item_idx, best first


def rank_full_catalog(
    score_fn: ScoreFn,
    targets: torch.Tensor,
    n_catalog: int,
    seen_rows: np.ndarray,
    seen_items: np.ndarray,
    k_max: int,
    chunk_size: int = 65_536,
) -> RankResult:
    """Rank every catalog item (item_idx 2 .. n_catalog + 1) for a batch of users.

    Seen items never count as outranking the target and never enter the top-K; the target
    itself is excluded from the comparison. Memory is O(B × (chunk_size + k_max)). ``k_max=0``:
    ranks only (the top-K lists are empty).
    """
    device = targets.device
    batch = targets.shape[0]
    target_scores = score_fn(targets).diagonal().float()
    seen_rows_t = torch.as_tensor(seen_rows, device=device)
    seen_items_t = torch.as_tensor(seen_items, device=device)
    ranks = torch.zeros(batch, dtype=torch.long, device=device)
    repeat = torch.zeros(batch, dtype=torch.bool, device=device)
    top_scores = torch.full((batch, 0), float("-inf"), device=device)
    top_items = torch.zeros((batch, 0), dtype=torch.long, device=device)
    end = FIRST_ITEM_IDX + n_catalog
    for lo in range(FIRST_ITEM_IDX, end, chunk_size):
        hi = min(lo + chunk_size, end)
        items = torch.arange(lo, hi, device=device)
        scores = score_fn(items).float()
        if scores.stride(0) == 0:  # an expanded (shared-row) view cannot be masked per user
            scores = scores.contiguous()
        in_chunk = (seen_items_t >= lo) & (seen_items_t < hi)
        scores[seen_rows_t[in_chunk], seen_items_t[in_chunk] - lo] = float("-inf")
        rows = torch.nonzero((targets >= lo) & (targets < hi)).squeeze(1)
        cols = targets[rows] - lo
        own = scores[rows, cols].clone()
        repeat[rows] |= own == float("-inf")  # masked as seen: the user already has it
        scores[rows, cols] = float("-inf")  # the target does not outrank itself
        ranks += (scores >= target_scores[:, None]).sum(dim=1)
        scores[rows, cols] = own
        if k_max == 0:  # ranks only (validation): no top-K lists to keep
            continue
        k = min(k_max, hi - lo)
        chunk_scores, chunk_pos = scores.topk(k, dim=1)
        merged_scores = torch.cat([top_scores, chunk_scores], dim=1)
        merged_items = torch.cat([top_items, chunk_pos + lo], dim=1)
        keep = min(k_max, merged_scores.shape[1])
        top_scores, order = merged_scores.topk(keep, dim=1)
        top_items = merged_items.gather(1, order)
    ranks = torch.where(repeat, torch.full_like(ranks, n_catalog), ranks)
    top_items = top_items.masked_fill(top_scores == float("-inf"), 0)  # seen fillers -> padding
    return RankResult(ranks=ranks, topk=top_items)


def rank_static_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen_rows: np.ndarray,
    seen_items: np.ndarray,
    k_max: int,
    order: torch.Tensor | None = None,
) -> RankResult:
    """``rank_full_catalog`` for scores shared by every user (popularity), without scoring the
    catalog per user: O(B × (k_max + seen)) after one sort, instead of O(B × catalog).

    ``scores`` [n_catalog + 2] by item_idx (rows 0/1 ignored); ``order`` = catalog item_idx by
    descending score (stable), reusable across batches. Same rank semantics: seen items never
    outrank the target, the target does not outrank itself, ties are pessimistic.
    """
    device = targets.device
    if order is None:
        order = static_order(scores)
    ascending = scores[order].flip(0)  # the sorted scores, read off the order instead of sorting again
    target_scores = scores[targets]
    at_least = len(ascending) - torch.searchsorted(ascending, target_scores, side="left")
    pairs = torch.unique(
        torch.as_tensor(seen_rows, dtype=torch.long, device=device) * len(scores)
        + torch.as_tensor(seen_items, dtype=torch.long, device=device)
    )  # a pair listed twice must not be subtracted twice
    seen_rows_t, seen_items_t = pairs // len(scores), pairs % len(scores)
    outranking_seen = (scores[seen_items_t] >= target_scores[seen_rows_t]) & (
        seen_items_t != targets[seen_rows_t]
    )
    seen_counts = torch.zeros(len(targets), dtype=torch.long, device=device)
    seen_counts.index_add_(0, seen_rows_t, outranking_seen.long())
    ranks = at_least - 1 - seen_counts
    repeat = torch.zeros(len(targets), dtype=torch.bool, device=device)
    repeat[seen_rows_t[seen_items_t == targets[seen_rows_t]]] = True
    ranks = torch.where(repeat, torch.full_like(ranks, len(scores) - FIRST_ITEM_IDX), ranks)
    # top-K: the global order's head, each user's seen items skipped
    per_user = torch.bincount(seen_rows_t, minlength=len(targets))
    head = order[: k_max + int(per_user.max()) if len(seen_rows_t) else k_max]
    position = torch.full((len(scores),), len(head), dtype=torch.long, device=device)
    position[head] = torch.arange(len(head), device=device)
    skip = torch.zeros(len(targets), len(head) + 1, dtype=torch.bool, device=device)
    skip[seen_rows_t, position[seen_items_t]] = True
    keep_first = torch.argsort(skip[:, :-1].to(torch.int8), dim=1, stable=True)[:, :k_max]
    topk = head[keep_first].masked_fill(skip[:, :-1].gather(1, keep_first), 0)  # seen fillers -> padding
    return RankResult(ranks=ranks, topk=topk)


def static_order(scores: torch.Tensor) -> torch.Tensor:
    """Catalog item_idx by descending score, ties by item_idx (deterministic)."""
    return torch.argsort(-scores[FIRST_ITEM_IDX:], stable=True) + FIRST_ITEM_IDX
