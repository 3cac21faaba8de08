"""The two-tower training loss as one object: which columns each position is contrasted with, and
the softmax over them.

For a position p with user vector u_p and next item i_p, over the columns C (with their logQ
corrections q_j: log of the expected number of times item j is among the columns):

    L = −(1/P) Σ_p [ s(u_p, i_p)/τ − q_{i_p} − log Σ_{j ∈ C \\ S_p} exp(s(u_p, j)/τ − q_j) ]

where S_p are the items masked for p (the user's earlier items with ``mask_seen``, accidental hits
of i_p among sampled columns). ``softmax`` names C:

- ``exact``: every item of the negative pool, each once (SASRec's cross-entropy; q = 0);
- ``sampled``: ``num_sampled`` negatives drawn from the pool, plus (``batch_targets``) the distinct
  targets of the batch, with logQ per source (``logq``);
- ``in_batch``: the batch's targets only (the last-position objective's in-batch softmax).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recsys.models.losses import (
    LOGQ_MODES,
    all_positions_loss,
    exact_softmax_loss,
    sampled_softmax_loss,
)
from recsys.models.negatives import NegativePool

SOFTMAX_MODES = ("exact", "sampled", "in_batch")


class RetrievalSoftmax(nn.Module):
    def __init__(
        self,
        pool: NegativePool,
        softmax: str,
        num_sampled: int,
        temperature: float,
        logq: str,
        batch_targets: bool,
        mask_accidental_hits: bool,
        chunk_size: int | None,
    ):
        super().__init__()
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {softmax!r}")
        if logq not in LOGQ_MODES:
            raise ValueError(f"logq must be one of {LOGQ_MODES}, got {logq!r}")
        if softmax == "sampled" and num_sampled <= 0:
            raise ValueError(f"softmax=sampled needs model.num_global_negatives > 0, got {num_sampled}")
        self.pool = pool
        self.softmax = softmax
        self.num_sampled = num_sampled if softmax == "sampled" else 0
        self.temperature = temperature
        self.logq = logq
        self.batch_targets = batch_targets
        self.mask_accidental_hits = mask_accidental_hits
        self.chunk_size = chunk_size
        self._rng: torch.Generator | None = None

    def sample(self, rank: int = 0) -> torch.Tensor:
        """This step's negative columns: the whole pool (``exact``), ``num_sampled`` draws, or none."""
        if self._rng is None:
            # its own stream per rank: every process draws different negatives from the same seed
            self._rng = torch.Generator(device=self.pool.ids.device)
            self._rng.manual_seed(torch.initial_seed() + 1_000_003 * rank)
        return self.pool.sample(-1 if self.softmax == "exact" else self.num_sampled, self._rng)

    # ------------------------------------------------------------- every position of a window
    def batch_columns(self, target_ids: torch.Tensor) -> torch.Tensor:
        """The batch's distinct targets as extra shared columns (sampled and in-batch modes)."""
        use_batch = self.batch_targets and self.softmax != "exact"
        return torch.unique(target_ids) if use_batch else target_ids[:0]

    def all_positions(
        self,
        user: torch.Tensor,
        positive: torch.Tensor,
        target_ids: torch.Tensor,
        columns: torch.Tensor,
        negatives: torch.Tensor,
        batch_ids: torch.Tensor,
        seen: torch.Tensor | None,
    ) -> torch.Tensor:
        """``columns``: the vectors of ``negatives`` then ``batch_ids``, shared by every position."""
        if self.softmax == "exact":  # the whole pool, item i in its column
            return exact_softmax_loss(
                user,
                self.pool.column[target_ids],
                columns,
                self.temperature,
                self.chunk_size,
                seen_ids=seen,
                catalog_ids=negatives,
            )
        pos_log_q, shared_log_q = self._shared_log_q(target_ids, negatives, batch_ids, target_ids.shape[0])
        return all_positions_loss(
            user,
            positive,
            target_ids,
            columns,
            torch.cat([negatives, batch_ids]),
            self.temperature,
            positive_log_q=pos_log_q,
            shared_log_q=shared_log_q,
            mask_hits=True,  # the target among the shared columns is never its own negative
            chunk_size=self.chunk_size,
            seen_ids=seen,
        )

    def _shared_log_q(
        self, target_ids: torch.Tensor, negatives: torch.Tensor, batch_ids: torch.Tensor, n_positions: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """logQ of the shared columns (``NegativePool.shared_log_q``); the positive gets its own
        item's total."""
        sampled = self.logq == "both" and self.num_sampled > 0
        from_batch = self.logq in ("in_batch", "both") and len(batch_ids) > 0
        if not (sampled or from_batch):
            return None, None
        n, device = len(negatives), negatives.device

        def expected(items: torch.Tensor) -> torch.Tensor:
            return self.pool.shared_log_q(items, n, n_positions, sampled, from_batch)

        from_negatives = expected(negatives) if sampled else torch.zeros(n, device=device)
        from_targets = expected(batch_ids) if from_batch else torch.zeros(len(batch_ids), device=device)
        return expected(target_ids), torch.cat([from_negatives, from_targets])

    # ------------------------------------------------------------- the last position only
    def last_position(
        self,
        user: torch.Tensor,
        in_batch: torch.Tensor,
        in_batch_ids: torch.Tensor,
        offset: int,
        negatives_vec: torch.Tensor,
        negatives: torch.Tensor,
    ) -> torch.Tensor:
        """Each row's target against the batch's targets (``in_batch``: every rank's, the row's
        own at ``offset + row``) and the drawn negatives."""
        pos_log_q = None
        if self.logq in ("in_batch", "both"):
            pos_log_q = self.pool.in_batch_log_q(in_batch_ids, len(in_batch_ids))
        neg_log_q = None
        if self.logq == "both" and len(negatives):
            neg_log_q = self.pool.sampled_log_q(negatives, len(negatives))
        return sampled_softmax_loss(
            user,
            in_batch,
            in_batch_ids,
            self.temperature,
            negatives=negatives_vec if len(negatives) else None,
            negative_ids=negatives if len(negatives) else None,
            positive_log_q=pos_log_q,
            negative_log_q=neg_log_q,
            mask_hits=self.mask_accidental_hits,
            # with the whole catalog as negatives, in-batch columns would double-count items
            in_batch_negatives=self.softmax != "exact",
            positive_offset=offset,
        )


def softmax_mode(softmax: str | None, num_global_negatives: int) -> str:
    """The named mode. Before ``softmax`` existed the count said it (-1: the whole catalog, 0: the
    batch's targets only): older checkpoints and overrides keep their meaning."""
    if num_global_negatives < 0:
        return "exact"
    if num_global_negatives == 0:
        return "in_batch"
    return softmax or "sampled"


def gather_in_batch(
    module: Any, positive: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every rank's positives as in-batch columns (gradients flow back to their ranks), their
    ids, and where this rank's rows sit among them. One process: the batch itself."""
    if module._trainer is None or module.trainer.world_size == 1:
        return positive, target, 0
    d = positive.shape[-1]
    columns = module.all_gather(positive, sync_grads=True).reshape(-1, d)
    ids = module.all_gather(target).reshape(-1)
    return columns, ids, module.global_rank * target.shape[0]
