"""Sparse embedding gradients: the optimizer leaves untouched rows alone and matches dense Adam
on the touched ones; clipping handles sparse gradients."""

from __future__ import annotations

import torch
from torch import nn

from recsys.models.optim import DenseSparseAdam, clip_grad_norm


def _models(seed: int = 0):
    torch.manual_seed(seed)
    dense = nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 1))
    sparse = nn.Sequential(nn.Embedding(50, 4, sparse=True), nn.Linear(4, 1))
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def test_sparse_step_touches_only_batch_rows_and_matches_adam_there():
    dense, sparse = _models()
    opt_d = torch.optim.Adam(dense.parameters(), lr=0.1)
    opt_s = DenseSparseAdam(list(sparse[1].parameters()), [sparse[0].weight], lr=0.1)
    before = sparse[0].weight.detach().clone()
    rows = torch.tensor([3, 7, 7, 11])
    for model, opt in ((dense, opt_d), (sparse, opt_s)):
        opt.zero_grad()
        model(rows).pow(2).sum().backward()
        opt.step()
    after = sparse[0].weight.detach()
    touched = torch.zeros(50, dtype=torch.bool)
    touched[rows] = True
    assert torch.equal(after[~touched], before[~touched])
    assert not torch.allclose(after[touched], before[touched])
    # first Adam step: identical on the touched rows and the dense layer
    torch.testing.assert_close(after[touched], dense[0].weight.detach()[touched])
    torch.testing.assert_close(sparse[1].weight, dense[1].weight)


def test_scheduler_lr_reaches_both_inner_optimizers():
    _, sparse = _models()
    opt = DenseSparseAdam(list(sparse[1].parameters()), [sparse[0].weight], lr=0.1)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5).step()
    assert [g["lr"] for g in opt.dense.param_groups + opt.sparse.param_groups] == [0.05, 0.05]
    state = opt.state_dict()
    assert set(state) == {"dense", "sparse"}
    opt.load_state_dict(state)


def test_clip_grad_norm_with_sparse_gradients_equals_dense_clipping():
    dense, sparse = _models()
    rows = torch.tensor([1, 2, 2, 5])
    for model in (dense, sparse):
        (model(rows) * 100).sum().backward()
    expected = torch.nn.utils.clip_grad_norm_(dense.parameters(), 1.0)
    total = clip_grad_norm(sparse.parameters(), 1.0)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(sparse[0].weight.grad.to_dense(), dense[0].weight.grad)
    torch.testing.assert_close(sparse[1].weight.grad, dense[1].weight.grad)
