"""Negatives of the two-tower softmax: which items may be one, how they are drawn, and the logQ
terms (the log expected number of times an item appears among a step's columns)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys.data.dataset import FIRST_ITEM_IDX

NEGATIVE_POOLS = ("catalog", "trained")
SAMPLINGS = ("uniform", "popularity")


def negative_pool_mask(is_warm: np.ndarray, pool: str) -> np.ndarray:
    """Which item_idx rows may be negatives. ``trained``: only items that are some training
    target. An item that never is one (every future cold item) would otherwise be a negative in
    every step and never a positive, always in its text-only form: training would learn to push
    exactly the text-only vectors of new items down (measured in experiments/log/cold_items.md, issue 15).
    """
    if pool not in NEGATIVE_POOLS:
        raise ValueError(f"negative_pool must be one of {NEGATIVE_POOLS}, got {pool!r}")
    mask = np.zeros(len(is_warm), dtype=bool)
    mask[FIRST_ITEM_IDX:] = True if pool == "catalog" else np.asarray(is_warm[FIRST_ITEM_IDX:], dtype=bool)
    return mask


class NegativePool(nn.Module):
    """Buffers only (never saved: rebuilt from the dataset), indexed by item_idx."""

    def __init__(self, train_count: np.ndarray, is_warm: np.ndarray, pool: str, sampling: str):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"negative_sampling must be one of {SAMPLINGS}, got {sampling!r}")
        counts = torch.as_tensor(np.asarray(train_count), dtype=torch.float64)
        # in-batch positives follow the training-target distribution
        target_p = counts.clamp(min=1) / counts[FIRST_ITEM_IDX:].clamp(min=1).sum()
        in_pool = negative_pool_mask(is_warm, pool)
        weights = torch.zeros_like(counts)
        weights[FIRST_ITEM_IDX:] = 1.0 if sampling == "uniform" else (counts[FIRST_ITEM_IDX:] + 1) ** 0.75
        weights = weights * torch.as_tensor(in_pool, dtype=weights.dtype)
        # the whole pool as columns (num_global_negatives=-1): item -> its column, -1 outside
        ids = torch.as_tensor(np.flatnonzero(in_pool), dtype=torch.long)
        column = torch.full((len(in_pool),), -1, dtype=torch.long)
        column[ids] = torch.arange(len(ids))
        for name, value in (
            ("log_target_p", torch.log(target_p).float()),
            ("negative_p", (weights / weights.sum()).float()),
            ("ids", ids),
            ("column", column),
        ):
            self.register_buffer(name, value, persistent=False)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` negatives (with replacement); ``n < 0``: the whole pool, each item once."""
        if n < 0:
            return self.ids
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=self.ids.device)
        return torch.multinomial(self.negative_p, n, replacement=True, generator=generator)

    def sampled_log_q(self, items: torch.Tensor, n_sampled: int) -> torch.Tensor:
        """log N·q(i) of items among ``n_sampled`` drawn negatives."""
        return torch.log(self.negative_p[items] * n_sampled)

    def in_batch_log_q(self, items: torch.Tensor, n_rows: int) -> torch.Tensor:
        """log B·p(i) of items among a batch's ``n_rows`` positives."""
        return self.log_target_p[items] + np.log(n_rows)

    def shared_log_q(
        self, items: torch.Tensor, n_sampled: int, n_positions: int, sampled: bool, from_batch: bool
    ) -> torch.Tensor:
        """The all-position loss's logQ of ``items`` among the shared columns, per source: N·q(i)
        for ``n_sampled`` negatives, 1 − (1 − p(i))^P for the distinct targets of P positions."""
        count = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
        if sampled:
            count = count + self.negative_p[items] * n_sampled
        if from_batch:
            count = count - torch.expm1(n_positions * torch.log1p(-self.log_target_p[items].exp()))
        return torch.log(count.clamp(min=1e-12))
