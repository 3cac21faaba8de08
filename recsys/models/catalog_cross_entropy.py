"""Cross-entropy over the whole catalog in row blocks, with its gradient written out.

For P positions with user vectors u_p, catalog vectors e_j and targets t_p, with each position's
masked columns S_p (earlier items other than t_p):

    z_pj = u_p · e_j   (j ∉ S_p; −∞ for j ∈ S_p)
    L    = Σ_p [ logsumexp_j z_pj − z_{p,t_p} ]
    ∂L/∂z_pj = softmax_j(z_p)_j − 1[j = t_p]        (0 on the masked columns)
    ∂L/∂u_p = Σ_j ∂L/∂z_pj e_j ,   ∂L/∂e_j = Σ_p ∂L/∂z_pj u_p

Why not ``F.cross_entropy`` over the [P, N] logits: on a CPU that matrix makes ~14 passes over
memory per step (the matmul's output, a dtype copy, the mask, log_softmax and nll forward, the
zero-filled gradient, log_softmax backward, the copy back, the mask's backward), and at the
recipe's sizes (Sports: ~800 positions × 18K items a step) those passes, not the matmuls, were
two thirds of a training step in a profile. Here a block of rows that fits in cache goes through the matmul,
the mask, one logsumexp, and in the backward the same matmul again, one exp and two matmuls:
a Sports training step 1.45× faster (experiments/log/benchmark.md), the same values and gradients.
Only the per-row logsumexp is kept between the passes, so memory is bounded by one block.
"""

from __future__ import annotations

import torch

# one block's fp32 logits: on a CPU rows that stay in cache through the passes (8 MiB); on an
# accelerator, whose passes are cheap and whose kernels want large matrices, a memory bound
BLOCK_BYTES = {"cpu": 1 << 23}
ACCELERATOR_BLOCK_BYTES = 1 << 29


def block_rows(n_columns: int, limit: int | None = None, device: str = "cpu") -> int:
    """Rows a block holds: the device's block bytes of fp32 logits, at least 8, at most ``limit``."""
    budget = BLOCK_BYTES.get(device, ACCELERATOR_BLOCK_BYTES)
    rows = max(8, budget // (4 * max(n_columns, 1)))
    return min(rows, limit) if limit else rows


def masked_positions(
    target_columns: torch.Tensor, seen_ids: torch.Tensor, catalog_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (row · N + column, sorted) of each row's seen items among the catalog columns,
    other than the row's target, and each row's offset into them ([P + 1])."""
    n_rows, n_columns = seen_ids.shape[0], len(catalog_ids)
    values, order = torch.sort(catalog_ids)
    slot = torch.searchsorted(values, seen_ids).clamp(max=max(n_columns - 1, 0))
    column = order[slot]
    hit = (values[slot] == seen_ids) & (seen_ids > 0) & (column != target_columns[:, None])
    rows = torch.arange(n_rows, device=seen_ids.device)[:, None].expand_as(column)
    flat = torch.sort((rows * n_columns + column)[hit]).values
    counts = torch.bincount(rows[hit], minlength=n_rows)
    return flat, torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _block_logits(user, catalog, lo, hi, flat, offsets) -> torch.Tensor:
    logits = torch.mm(user[lo:hi], catalog.T).float()
    start, stop = int(offsets[lo]), int(offsets[hi])
    if stop > start:
        logits.view(-1).index_fill_(0, flat[start:stop] - lo * catalog.shape[0], float("-inf"))
    return logits


class _CatalogCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user, catalog, targets, flat, offsets, block):
        total = torch.zeros((), dtype=torch.float32, device=user.device)
        lse = torch.empty(user.shape[0], dtype=torch.float32, device=user.device)
        for lo in range(0, user.shape[0], block):
            hi = min(lo + block, user.shape[0])
            logits = _block_logits(user, catalog, lo, hi, flat, offsets)
            lse[lo:hi] = torch.logsumexp(logits, 1)
            total += (lse[lo:hi] - logits.gather(1, targets[lo:hi, None]).squeeze(1)).sum()
        ctx.save_for_backward(user, catalog, targets, flat, offsets, lse)
        ctx.block = block
        return total

    @staticmethod
    def backward(ctx, grad):
        user, catalog, targets, flat, offsets, lse = ctx.saved_tensors
        grad_user = torch.empty_like(user)
        grad_catalog = torch.zeros(catalog.shape, dtype=torch.float32, device=catalog.device)
        for lo in range(0, user.shape[0], ctx.block):
            hi = min(lo + ctx.block, user.shape[0])
            dz = _block_logits(user, catalog, lo, hi, flat, offsets)
            dz.sub_(lse[lo:hi, None]).exp_()  # the softmax; exp(−∞) = 0 on the masked columns
            dz[torch.arange(hi - lo, device=dz.device), targets[lo:hi]] -= 1.0
            dz = dz.to(user.dtype)
            grad_user[lo:hi] = dz @ catalog
            grad_catalog += dz.T @ user[lo:hi]
        scale = grad.to(torch.float32)
        return (
            (grad_user.float() * scale).to(user.dtype),
            (grad_catalog * scale).to(catalog.dtype),
            None,
            None,
            None,
            None,
        )


def catalog_cross_entropy(
    user: torch.Tensor,
    catalog: torch.Tensor,
    target_columns: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor] | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Σ_p CE(u_p · catalogᵀ, target_columns[p]) with ``masked`` = ``masked_positions(...)`` set to
    −∞. The matmuls run in the autocast dtype when autocast is on (bf16 where the CPU has it),
    everything else in fp32."""
    n_rows, n_columns = user.shape[0], catalog.shape[0]
    device = user.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(user.dtype, catalog.dtype)
    if masked is None:
        empty = torch.zeros(0, dtype=torch.long, device=user.device)
        masked = (empty, torch.zeros(n_rows + 1, dtype=torch.long, device=user.device))
    with torch.autocast(device, enabled=False):
        return _CatalogCrossEntropy.apply(
            user.to(dtype),
            catalog.to(dtype),
            target_columns,
            masked[0],
            masked[1],
            block or block_rows(n_columns, device=device),
        )
