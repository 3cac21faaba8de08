"""Cold-item holdout: held-out items never feed training; val and test rows stay as they were."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recsys.data.cold_items import ColdItemHoldout
from recsys.data.dataset import flatten_lists
from recsys.data.splitting import TEST, TRAIN, VAL
from tests.test_prepare import _prepare


def test_training_mask_drops_every_row_of_the_chosen_items():
    items = np.array([5, 6, 7, 5, 6, 8, 7, 9, 7, 8])
    role = np.array([TRAIN, TRAIN, TEST, TRAIN, VAL, TEST, TRAIN, TEST, VAL, TRAIN])
    holdout = ColdItemHoldout(fraction=1.0, seed=3)  # every warm test target: 7, 8 (9 is cold already)
    np.testing.assert_array_equal(holdout.choose(items, role), [7, 8])
    stats: Counter = Counter()
    mask = holdout.training_mask(items, role, stats)
    np.testing.assert_array_equal(mask, [True, True, False, True, True, False, False, True, False, False])
    assert stats == {
        "cold_holdout_items": 2,
        "cold_holdout_test_targets": 2,
        "cold_holdout_val_targets": 1,
        "cold_holdout_train_interactions": 2,
    }


def test_choice_is_seeded_and_sized():
    items = np.tile(np.arange(100), 2)
    role = np.repeat([TRAIN, TEST], 100)
    a = ColdItemHoldout(fraction=0.25, seed=1).choose(items, role)
    assert len(a) == 25 and np.array_equal(a, ColdItemHoldout(fraction=0.25, seed=1).choose(items, role))
    assert not np.array_equal(a, ColdItemHoldout(fraction=0.25, seed=2).choose(items, role))
    with pytest.raises(ValueError, match="fraction"):
        ColdItemHoldout(fraction=0.0)


def _by_id(dataset, table) -> list[tuple]:
    """Rows as (user, history item ids, target id, time): comparable across item indexings."""
    ids = dataset.items.set_index("item_idx")["item_id"]
    df = table.to_pandas()
    return sorted(
        (u, tuple(ids.loc[list(h)]), ids.loc[t], ts)
        for u, h, t, ts in zip(df["user_id"], df["history"], df["target"], df["timestamp"], strict=True)
    )


def test_prepared_cold_split_keeps_held_out_items_out_of_training(tmp_path):
    plain = _prepare(tmp_path, "synthetic")
    cold = _prepare(tmp_path, "synthetic", ["cold_items=holdout"])
    assert cold.path.name == "synthetic_cold_items" and plain.path.name == "synthetic"
    stats = cold.manifest["filter_stats"]
    for split in ("val", "test"):  # evaluation rows intact: same users, histories, targets, times
        assert _by_id(cold, cold.read_split(split)) == _by_id(plain, plain.read_split(split))
    # the held-out items: warm without the holdout, cold with it
    was_warm = plain.items.set_index("item_id")["is_warm"]
    now = cold.items.set_index("item_id")
    held_out = now.index[was_warm.loc[now.index].to_numpy() & ~now["is_warm"].to_numpy()]
    assert len(held_out) == stats["cold_holdout_items"] > 0
    assert (now.loc[held_out, "train_count"] == 0).all()
    held_idx = set(now.loc[held_out, "item_idx"])
    train = cold.read_split("train")
    values, _ = flatten_lists(train["history"])
    assert not held_idx & set(values.tolist()) and not held_idx & set(train["target"].to_numpy().tolist())
    test_targets = cold.read_split("test")["target"].to_numpy()
    assert np.isin(test_targets, list(held_idx)).sum() == stats["cold_holdout_test_targets"] > 0
    # training lost exactly the held-out items' rows, nothing else
    assert plain.read_split("train").num_rows - train.num_rows >= stats["cold_holdout_train_interactions"] > 0
    assert cold.manifest["config"]["cold_items"]["fraction"] == 0.2
