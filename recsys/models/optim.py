"""Optimization with sparse embedding gradients: the optimizer touches only this step's rows.

At the reference scale the ID table holds 434K × 256 parameters; a dense AdamW step reads and
writes all of them (and their two moments) although a batch touches a few thousand rows.
torch has no single optimizer that takes both sparse and dense gradients (AdamW rejects sparse
ones, SparseAdam dense ones), and Lightning's automatic optimization wants one optimizer, so
``DenseSparseAdam`` steps the two torch optimizers together behind one interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class DenseSparseAdam(torch.optim.Optimizer):
    """``torch.optim.AdamW`` for dense parameters + ``torch.optim.SparseAdam`` (lazy Adam on the
    rows present in the gradient) for parameters with sparse gradients.

    ``param_groups`` are the inner optimizers' own group dicts, so LR schedulers reach both.
    """

    def __init__(
        self,
        dense: Iterable[nn.Parameter],
        sparse: Iterable[nn.Parameter],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.dense = torch.optim.AdamW(list(dense), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.sparse = torch.optim.SparseAdam(list(sparse), lr=lr, betas=betas, eps=eps)
        # the same dict objects, not copies: a scheduler's lr change reaches the inner optimizers
        super().__init__(self.dense.param_groups + self.sparse.param_groups, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.dense.step()
        self.sparse.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dense.load_state_dict(state_dict["dense"])
        self.sparse.load_state_dict(state_dict["sparse"])


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that also accepts sparse gradients (torch's raises:
    no vector norm for sparse tensors). A sparse gradient's norm is that of its coalesced values."""
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad._values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


LR_SCHEDULES = ("plateau", "cosine")


def optimizer_config(
    parameters: Iterable[nn.Parameter],
    sparse_table: nn.Parameter | None,
    lr: float,
    weight_decay: float,
    schedule: str,
    lr_factor: float,
    lr_patience: int,
    monitor: str,
    total_steps: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """AdamW (``DenseSparseAdam`` when the ID table has sparse gradients) with the schedule:
    ``plateau`` halves the rate after ``lr_patience`` validations without a better ``monitor``;
    ``cosine`` decays to 0 over ``total_steps()`` optimizer steps."""
    parameters = list(parameters)
    if sparse_table is not None:
        dense = [p for p in parameters if p is not sparse_table]
        optimizer = DenseSparseAdam(dense, [sparse_table], lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if schedule == "cosine":
        # a fixed decay to 0 over the run's step budget: with a noisy validation metric a
        # plateau rule halves the rate on noise, and the end of the run is a low-rate polish
        steps = max(total_steps() if total_steps else 1, 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=lr_factor, patience=lr_patience
    )
    # strict=False: runs without validation (limit_val_batches=0) keep a constant lr
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "strict": False},
    }
