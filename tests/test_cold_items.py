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
    # every warm test target: 7, 8 (9 is cold already); no distractors
    holdout = ColdItemHoldout(fraction=1.0, distractors=0.0, seed=3, dir_suffix="_c")
    held, distractors = holdout.choose(items, role)
    np.testing.assert_array_equal(held, [7, 8])
    assert len(distractors) == 0
    stats: Counter = Counter()
    mask = holdout.training_mask(items, role, stats)
    np.testing.assert_array_equal(mask, [True, True, False, True, True, False, False, True, False, False])
    assert stats == {
        "cold_holdout_items": 2,
        "cold_holdout_test_targets": 2,
        "cold_holdout_val_targets": 1,
        "cold_holdout_train_interactions": 2,
        "cold_holdout_distractor_items": 0,
        "cold_holdout_distractor_train_interactions": 0,
    }


def test_distractors_are_warm_items_no_val_or_test_row_targets():
    # items 0-9 train targets; 0, 1 test targets, 2 a val target; 3-9 are nobody's val/test target
    items = np.array([*range(10), 0, 1, 2, 0])
    role = np.array([TRAIN] * 10 + [TEST, TEST, VAL, TEST])
    holdout = ColdItemHoldout(fraction=0.5, distractors=2.0, seed=0, dir_suffix="_c")
    held, distractors = holdout.choose(items, role)
    n_targets = int(np.isin(items[role == TEST], held).sum())  # item 0: 2 test targets, item 1: 1
    assert len(held) == 1 and len(distractors) == 2 * n_targets
    assert set(distractors) <= set(range(3, 10)) and not set(distractors) & set(held)
    stats: Counter = Counter()
    mask = holdout.training_mask(items, role, stats)
    # every training interaction of the held-out and distracting items is masked, nothing else
    np.testing.assert_array_equal(
        ~mask & (role == TRAIN), np.isin(items, [*held, *distractors]) & (role == TRAIN)
    )
    assert stats["cold_holdout_distractor_items"] == len(distractors)
    assert stats["cold_holdout_distractor_train_interactions"] == len(distractors)
    # more asked than there are: all of them
    many = ColdItemHoldout(fraction=1.0, distractors=50.0, seed=0, dir_suffix="_c").choose(items, role)[1]
    np.testing.assert_array_equal(many, np.arange(3, 10))
    with pytest.raises(ValueError, match="distractors"):
        ColdItemHoldout(fraction=0.5, distractors=-1.0, seed=0, dir_suffix="_c")


def test_choice_is_seeded_and_sized():
    items = np.tile(np.arange(100), 2)
    role = np.repeat([TRAIN, TEST], 100)

    def held(seed: int) -> np.ndarray:
        return ColdItemHoldout(fraction=0.25, distractors=0.0, seed=seed, dir_suffix="_c").choose(
            items, role
        )[0]

    a = held(1)
    assert len(a) == 25 and np.array_equal(a, held(1))
    assert not np.array_equal(a, held(2))
    with pytest.raises(ValueError, match="fraction"):
        ColdItemHoldout(fraction=0.0, distractors=0.0, seed=0, dir_suffix="_c")


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
    # the held-out items and the distractors: warm without the holdout, cold with it
    was_warm = plain.items.set_index("item_id")["is_warm"]
    now = cold.items.set_index("item_id")
    held_out = now.index[was_warm.loc[now.index].to_numpy() & ~now["is_warm"].to_numpy()]
    assert stats["cold_holdout_distractor_items"] > 0 and stats["cold_holdout_items"] > 0
    assert len(held_out) == stats["cold_holdout_items"] + stats["cold_holdout_distractor_items"]

    # two distractors per cold test target (the config's 2.0), or every warm item no val/test row targets
    def target_ids(dataset, split: str) -> set:
        ids = dataset.items.set_index("item_idx")["item_id"]
        return set(ids.loc[dataset.read_split(split)["target"].to_numpy()])

    untargeted = (
        set(was_warm.index[was_warm.to_numpy()]) - target_ids(plain, "val") - target_ids(plain, "test")
    )
    expected = min(2 * stats["cold_holdout_test_targets"], len(untargeted))
    assert stats["cold_holdout_distractor_items"] == expected
    assert (now.loc[held_out, "train_count"] == 0).all()
    held_idx = set(now.loc[held_out, "item_idx"])
    train = cold.read_split("train")
    values, _ = flatten_lists(train["history"])
    assert not held_idx & set(values.tolist()) and not held_idx & set(train["target"].to_numpy().tolist())
    test_targets = cold.read_split("test")["target"].to_numpy()
    assert np.isin(test_targets, list(held_idx)).sum() == stats["cold_holdout_test_targets"] > 0
    targeted = set(cold.read_split("val")["target"].to_numpy().tolist()) | set(test_targets.tolist())
    assert len(held_idx - targeted) == stats["cold_holdout_distractor_items"]
    # training lost the held-out items' and the distractors' rows
    lost = stats["cold_holdout_train_interactions"] + stats["cold_holdout_distractor_train_interactions"]

    def train_roles(dataset) -> np.ndarray:
        table = dataset.interactions(["user_idx", "role"])
        return table["user_idx"].to_numpy()[table["role"].to_numpy() == TRAIN]

    assert len(train_roles(plain)) - len(train_roles(cold)) == lost > 0
    for dataset in (plain, cold):  # a training row per training interaction but each user's first
        per_user = np.bincount(train_roles(dataset))
        assert dataset.read_split("train").num_rows == np.maximum(per_user - 1, 0).sum()
    assert cold.manifest["config"]["cold_items"]["fraction"] == 0.2
