"""Cold candidates may keep their retrieval slots when the ranker re-orders a list.

The ranker's strongest features (popularity, transitions) are interaction counts a cold item has
none of, and most cold candidates are not the target, so it learns to move cold items down. With
``cold_candidates="keep"`` a cold candidate stays at the position retrieval gave it and the ranker
orders the warm candidates around it: the two-stage list then holds the cold items retrieval
found, where it found them. Measured on the ML-100K cold split (experiments/log/cold_items.md, issue 15)
that keeps cold-target recall@10 at retrieval's but costs overall ndcg@10, so the default is
``"rank"`` (the ranker orders every candidate) and ``"keep"`` is there for catalogs where new
items must surface.
"""

from __future__ import annotations

import torch

COLD_CANDIDATE_POLICIES = ("keep", "rank")


def check_policy(policy: str) -> None:
    if policy not in COLD_CANDIDATE_POLICIES:
        raise ValueError(f"cold_candidates must be one of {COLD_CANDIDATE_POLICIES}, got {policy!r}")


def keep_cold_slots(scores: torch.Tensor, is_cold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, K] scores whose descending order is the final list, for candidates in retrieval order.

    Cold valid candidates keep their position; warm valid candidates fill the other positions in
    the order of ``scores``; invalid (padding) candidates come last. The returned scores are
    ``-position`` (padding ``-inf``), so any "sort by score" consumer reads the merged order.
    """
    batch, k = scores.shape
    cold = is_cold.bool() & mask
    position = torch.arange(k, device=scores.device).expand(batch, k)
    # group 0: valid warm (by score), 1: padding, 2: cold (by position) — a two-pass stable lexsort
    key = torch.where(cold, -position.to(scores.dtype), scores.masked_fill(~mask, float("-inf")))
    group = torch.where(cold, 2, torch.where(mask, 0, 1))
    by_key = key.argsort(dim=1, descending=True, stable=True)
    order = by_key.gather(1, group.gather(1, by_key).argsort(dim=1, stable=True))
    # the free slots in the same grouping: non-cold positions first (ascending), then cold ones
    slots = cold.to(torch.int8).argsort(dim=1, stable=True)
    final = torch.empty_like(position).scatter_(1, order, slots)
    return (-final.to(scores.dtype)).masked_fill(~mask, float("-inf"))


def final_scores(
    scores: torch.Tensor, is_cold: torch.Tensor, mask: torch.Tensor, policy: str
) -> torch.Tensor:
    """The scores a list is finally sorted by under ``policy`` (one of ``COLD_CANDIDATE_POLICIES``)."""
    check_policy(policy)
    return keep_cold_slots(scores, is_cold, mask) if policy == "keep" else scores
