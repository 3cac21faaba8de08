"""Negative pool membership: with `negative_pool=trained`, items that are never a training target
(every future cold item) are never negatives (issue 15); `catalog` keeps every item."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.data.dataset import FIRST_ITEM_IDX, item_arrays
from recsys.models.two_tower_module import TwoTowerModule
from tests.conftest import two_tower_module
from tests.test_prepare import _prepare


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("pool"), "synthetic")


def _model(dataset, pool: str, n_negatives: int, **kw) -> TwoTowerModule:
    """``n_negatives`` -1: the exact softmax over the pool; else that many sampled negatives."""
    torch.manual_seed(0)
    return two_tower_module(
        dataset.path,
        dim=16,
        softmax="exact" if n_negatives < 0 else "sampled",
        num_global_negatives=max(n_negatives, 1),
        negative_pool=pool,
        objective="all_positions",
        **kw,
    )


def test_pool_members(dataset):
    warm = item_arrays(dataset)["is_warm"]
    assert 0 < (~warm[FIRST_ITEM_IDX:]).sum() < dataset.n_items  # the synthetic catalog has cold items
    trained = _model(dataset, "trained", -1)
    np.testing.assert_array_equal(trained.loss.sample().numpy(), np.flatnonzero(warm))
    catalog = _model(dataset, "catalog", -1)
    np.testing.assert_array_equal(catalog.loss.sample().numpy(), np.arange(2, dataset.n_items + 2))
    sampled = _model(dataset, "trained", 20_000).loss.sample().numpy()
    assert warm[sampled].all()
    assert not warm[_model(dataset, "catalog", 20_000).loss.sample().numpy()].all()
    with pytest.raises(ValueError, match="negative_pool"):
        _model(dataset, "warm-ish", -1)


@pytest.mark.parametrize("pool", ["trained", "catalog"])
def test_exact_softmax_runs_over_the_pool_only(dataset, pool):
    model = _model(dataset, pool, -1).eval()  # no dropout: the step is deterministic
    warm = torch.as_tensor(item_arrays(dataset)["is_warm"])
    ids = torch.nonzero(warm).flatten()[:7]  # a window of trained items: 6 positions
    batch = {"history": ids[None, :-1], "targets": ids[None, 1:], "lengths": torch.tensor([6])}
    with torch.no_grad():
        loss = model._all_positions_step(batch)
        user = model.user_tower.forward_all(model.item_tower(batch["history"]), batch["lengths"])
        pool_ids = torch.nonzero(warm).flatten() if pool == "trained" else torch.arange(2, model.n_items + 2)
        logits = user @ model.item_tower(pool_ids).T / model.hparams.temperature
        columns = torch.searchsorted(pool_ids, batch["targets"][0])
        expected = F.cross_entropy(logits, columns)
    torch.testing.assert_close(loss, expected)


def test_context_positions_are_read_but_not_scored(dataset):
    """data.window_stride: a target of 0 inside a window's length is context, not a training position."""
    model = _model(dataset, "trained", -1).eval()
    warm = torch.as_tensor(item_arrays(dataset)["is_warm"])
    ids = torch.nonzero(warm).flatten()[:7]
    targets = ids[None, 1:].clone()
    targets[0, :4] = 0  # the first 4 positions are context for the last 2 targets
    batch = {"history": ids[None, :-1], "targets": targets, "lengths": torch.tensor([6])}
    with torch.no_grad():
        loss = model._all_positions_step(batch)
        user = model.user_tower.forward_all(model.item_tower(batch["history"]), batch["lengths"])[4:]
        pool_ids = torch.nonzero(warm).flatten()
        logits = user @ model.item_tower(pool_ids).T / model.hparams.temperature
        expected = F.cross_entropy(logits, torch.searchsorted(pool_ids, ids[5:]))
    torch.testing.assert_close(loss, expected)


def test_mask_seen_drops_a_windows_earlier_items_from_each_positions_negatives(dataset):
    """model.mask_seen: position t's softmax leaves out the items read up to t (context included)."""
    model = _model(dataset, "trained", -1, mask_seen=True).eval()
    warm = torch.as_tensor(item_arrays(dataset)["is_warm"])
    pool_ids = torch.nonzero(warm).flatten()
    ids = pool_ids[:7]
    targets = ids[None, 1:].clone()
    targets[0, :2] = 0  # two context positions, four scored
    batch = {"history": ids[None, :-1], "targets": targets, "lengths": torch.tensor([6])}
    with torch.no_grad():
        loss = model._all_positions_step(batch)
        user = model.user_tower.forward_all(model.item_tower(batch["history"]), batch["lengths"])[2:]
        logits = user @ model.item_tower(pool_ids).T / model.hparams.temperature
        for row, t in enumerate(range(2, 6)):
            logits[row, : t + 1] = float("-inf")  # pool columns 0..t hold the items read by position t
        expected = F.cross_entropy(logits, torch.searchsorted(pool_ids, ids[3:]))
        unmasked = _model(dataset, "trained", -1).eval()._all_positions_step(batch)
    torch.testing.assert_close(loss, expected)
    assert loss < unmasked
    with pytest.raises(ValueError, match="mask_seen"):
        two_tower_module(dataset.path, dim=16, objective="last_position", mask_seen=True)
