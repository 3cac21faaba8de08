from __future__ import annotations

import numpy as np
import pytest

from recsys.data.splitting import (
    HISTORY_ONLY,
    TEST,
    TRAIN,
    VAL,
    GlobalTemporalSplitter,
    LeaveOneOutSplitter,
    history_rows,
    sequence_order,
)


def test_sequence_order_is_stable_on_ties():
    users = np.array([1, 0, 1, 0, 1])
    ts = np.array([5, 7, 5, 7, 1])
    assert sequence_order(users, ts).tolist() == [1, 3, 4, 0, 2]  # ties keep source order


def test_leave_one_out_roles():
    users = np.array([0, 0, 0, 0, 1, 1, 2])
    roles = LeaveOneOutSplitter().assign(users, np.arange(7))
    assert roles.tolist() == [TRAIN, TRAIN, VAL, TEST, TRAIN, TEST, TRAIN]


@pytest.mark.parametrize("others", ["train", "history"])
def test_leave_one_out_validates_a_seeded_sample(others):
    """Two of five eligible users (>= 3 rows) are validated; the others' second-to-last rows are
    training targets or history only; every other row keeps its role, and the sample is the
    same whatever ``others``."""
    users = np.repeat(np.arange(6), [4, 3, 5, 2, 3, 3])
    ts = np.arange(len(users))
    roles = LeaveOneOutSplitter(validation_users=2, others=others, seed=7).assign(users, ts)
    every = LeaveOneOutSplitter().assign(users, ts)
    eligible = np.flatnonzero(every == VAL)  # the second-to-last rows of users with >= 3 rows
    assert len(eligible) == 5 and (roles[eligible] == VAL).sum() == 2
    rest = roles[eligible][roles[eligible] != VAL]
    assert len(rest) == 3 and (rest == (TRAIN if others == "train" else HISTORY_ONLY)).all()
    untouched = np.setdiff1d(np.arange(len(users)), eligible)
    assert (roles[untouched] == every[untouched]).all()
    again = LeaveOneOutSplitter(validation_users=2, others="train", seed=7).assign(users, ts)
    assert (np.flatnonzero(again == VAL) == np.flatnonzero(roles == VAL)).all()


def test_leave_one_out_sample_at_least_the_users_validates_everyone():
    users = np.repeat(np.arange(3), 3)
    every = LeaveOneOutSplitter().assign(users, np.arange(9))
    assert (LeaveOneOutSplitter(validation_users=3).assign(users, np.arange(9)) == every).all()
    with pytest.raises(ValueError, match="split.others"):
        LeaveOneOutSplitter(validation_users=2, others="drop")
    with pytest.raises(ValueError, match="validation_users"):
        LeaveOneOutSplitter(validation_users=0)


def test_leave_one_out_tie_takes_last_source_row_as_test():
    users = np.array([0, 0, 0, 0])
    items = np.array([10, 11, 12, 13])
    ts = np.array([1, 2, 2, 2])  # three rows share the last timestamp
    order = sequence_order(users, ts)
    roles = LeaveOneOutSplitter().assign(users[order], ts[order])
    assert items[order][roles == TEST].tolist() == [13]
    assert items[order][roles == VAL].tolist() == [12]


def test_global_temporal_no_future_in_history():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 10)
    ts = rng.integers(0, 1000, len(users))
    order = sequence_order(users, ts)
    su, st = users[order], ts[order]
    items = np.arange(len(su))
    split = GlobalTemporalSplitter(0.7, 0.85)
    roles = split.assign(su, st)
    t_val, t_test = np.quantile(st, [0.7, 0.85])
    assert (st[roles == TRAIN] < t_val).all()
    assert ((st[roles == VAL] >= t_val) & (st[roles == VAL] < t_test)).all()
    assert (st[roles == TEST] >= t_test).all()
    assert set(np.unique(roles)) <= {TRAIN, VAL, TEST, HISTORY_ONLY}
    for label in (VAL, TEST):
        rows = history_rows(su, items, st, np.flatnonzero(roles == label), max_history=1000)
        for user, hist, target in zip(
            rows["user_idx"].to_pylist(), rows["history"].to_pylist(), rows["target"].to_pylist(), strict=True
        ):
            assert all(st[h] <= st[target] for h in hist)
            assert st[target] >= (t_val if label == VAL else t_test)
            assert np.unique(su[hist]).tolist() == [user]
        assert len(set(rows["user_idx"].to_pylist())) == len(rows["user_idx"])  # one row per user


def test_global_temporal_rejects_bad_quantiles():
    with pytest.raises(ValueError, match="val_quantile < test_quantile"):
        GlobalTemporalSplitter(0.9, 0.8)


def test_history_rows_match_bruteforce():
    rng = np.random.default_rng(1)
    users = np.sort(rng.integers(0, 20, 400))
    items = rng.integers(2, 500, 400)
    ts = np.arange(400)
    targets = np.flatnonzero(rng.random(400) < 0.5)
    cap = 7
    rows = history_rows(users, items, ts, targets, max_history=cap)
    expected = []
    for t in targets:
        prev = [i for i in range(t) if users[i] == users[t]][-cap:]
        if prev:
            expected.append((users[t], items[prev].tolist(), items[t], ts[t]))
    got = list(
        zip(
            rows["user_idx"].to_pylist(),
            rows["history"].to_pylist(),
            rows["target"].to_pylist(),
            rows["timestamp"].to_pylist(),
            strict=True,
        )
    )
    assert got == expected
    assert max(len(h) for _, h, _, _ in got) == cap


def test_skip_last_splits_what_comes_before_the_served_val_and_test():
    """``skip_last=2``: each user's last two interactions (the served split's val and test) are
    history only; test is the served model's last training target and val the one before; rows
    built from it never reach the skipped interactions, in targets or histories."""
    users = np.repeat(np.arange(4), [6, 4, 3, 2])
    ts = np.arange(len(users))
    served = LeaveOneOutSplitter().assign(users, ts)
    holdout = LeaveOneOutSplitter(skip_last=2).assign(users, ts)
    # user 0 (rows 0-5): train 0-1, val 2, test 3, skipped 4-5; user 1 (6-9): train 6, test 7,
    # skipped 8-9; user 2 (10-12): 10 feeds training only, skipped 11-12; user 3 (13-14): skipped
    assert np.flatnonzero(holdout == TEST).tolist() == [3, 7]
    assert np.flatnonzero(holdout == VAL).tolist() == [2]
    assert np.flatnonzero(holdout == HISTORY_ONLY).tolist() == [4, 5, 8, 9, 11, 12, 13, 14]
    # the holdout's targets are the served model's training targets, never its val or test
    assert (served[holdout >= VAL] == TRAIN).all()
    assert set(np.flatnonzero(served >= VAL)) <= set(np.flatnonzero(holdout == HISTORY_ONLY))
    items = np.arange(len(users)) + 100
    rows = history_rows(users, items, ts, np.flatnonzero(holdout == TEST), max_history=10)
    assert rows["target"].to_pylist() == [103, 107]
    assert rows["history"].to_pylist() == [[100, 101, 102], [106]]
    with pytest.raises(ValueError, match="skip_last"):
        LeaveOneOutSplitter(skip_last=-1)


def test_test_targets_make_several_lists_a_user_each_with_its_own_past():
    """``test_targets=3`` (with ``skip_last=2``, a ranker's holdout model for 3 lists a user): the
    last three interactions before the skipped ones are test rows, each with the history before it
    (earlier test targets included), the one before them val; a test row needs a history."""
    users = np.repeat(np.arange(3), [8, 4, 2])
    ts = np.arange(len(users))
    roles = LeaveOneOutSplitter(skip_last=2, test_targets=3).assign(users, ts)
    # user 0 (rows 0-7): train 0-1, val 2, test 3-5, skipped 6-7
    assert roles[:8].tolist() == [TRAIN, TRAIN, VAL, TEST, TEST, TEST, HISTORY_ONLY, HISTORY_ONLY]
    # user 1 (rows 8-11): two left after the skip, position 0 has no history: test 9 only
    assert roles[8:12].tolist() == [TRAIN, TEST, HISTORY_ONLY, HISTORY_ONLY]
    assert roles[12:].tolist() == [HISTORY_ONLY, HISTORY_ONLY]
    items = np.arange(len(users)) + 100
    rows = history_rows(users, items, ts, np.flatnonzero(roles == TEST), max_history=10)
    assert rows["target"].to_pylist() == [103, 104, 105, 109]
    assert rows["history"].to_pylist() == [
        [100, 101, 102],
        [100, 101, 102, 103],
        [100, 101, 102, 103, 104],
        [108],
    ]
    assert (
        LeaveOneOutSplitter(test_targets=1).assign(users, ts).tolist()
        == LeaveOneOutSplitter().assign(users, ts).tolist()
    )
    with pytest.raises(ValueError, match="test_targets"):
        LeaveOneOutSplitter(test_targets=0)
