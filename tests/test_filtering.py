from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from recsys.data.filtering import (
    InteractionFilters,
    apply_pair_filters,
    first_occurrence_mask,
    kcore_mask,
    to_epoch_ms,
)


def _block(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {
        "user_id": ["u"] * n,
        "item_id": ["i"] * n,
        "rating": [5.0] * n,
        "timestamp": [to_epoch_ms("2020-01-01")] * n,
        "verified": [True] * n,
    }
    base.update(cols)
    return pd.DataFrame(base)


def test_to_epoch_ms():
    assert to_epoch_ms("2015-01-01") == 1420070400000
    assert to_epoch_ms(123) == 123 and to_epoch_ms(None) is None


def test_row_filters_count_each_step_in_order():
    old = to_epoch_ms("2014-12-31 23:59:59.999")
    edge = to_epoch_ms("2015-01-01")
    block = _block(
        timestamp=[old, edge, edge, edge, old],
        rating=[5.0, 2.9, 3.0, 3.0, 1.0],
        verified=[True, True, False, True, False],
    )
    stats = Counter()
    kept = InteractionFilters().apply_row_filters(block, stats)
    assert list(kept.index) == [3]  # the boundary timestamp and rating 3.0 are kept
    # a row failing several filters is counted once, by the first one that drops it
    assert stats == {"dropped_before_min_timestamp": 2, "dropped_low_rating": 1, "dropped_unverified": 1}


def test_row_filters_can_be_switched_off():
    block = _block(rating=[1.0], verified=[False], timestamp=[0])
    off = InteractionFilters(min_timestamp=None, min_rating=None, require_verified=False)
    assert len(off.apply_row_filters(block, Counter())) == 1


def test_duplicates_keep_earliest_then_source_order():
    users = np.array([0, 0, 0, 1, 0])
    items = np.array([5, 5, 5, 5, 6])
    ts = np.array([30, 10, 10, 10, 1])
    # rows 1 and 2 tie at t=10: the earlier source row (1) wins
    assert first_occurrence_mask(users, items, ts).tolist() == [False, True, False, True, True]


def _is_kcore(users, items, k):
    return (np.bincount(users)[np.unique(users)] >= k).all() and (
        np.bincount(items)[np.unique(items)] >= k
    ).all()


def test_kcore_reaches_fixed_point_needing_several_passes():
    # item 9 has one row; removing it leaves user 3 with one row, which then removes item 2's
    # second row, cascading: a single pass is not enough.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    items = np.array([0, 1, 0, 1, 0, 1, 2, 9, 2, 5])
    keep, passes = kcore_mask(users, items, k=2)
    assert passes >= 3
    assert keep.tolist() == [True] * 6 + [False] * 4
    assert _is_kcore(users[keep], items[keep], 2)
    again, _ = kcore_mask(users[keep], items[keep], k=2)
    assert again.all()  # fixed point: nothing more to drop


def test_kcore_random_matches_bruteforce():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 60, 600), rng.integers(0, 80, 600)
    keep, _ = kcore_mask(users, items, k=5)
    assert _is_kcore(users[keep], items[keep], 5)
    # maximality: brute-force peeling one violator at a time gives the same set
    alive = np.ones(len(users), bool)
    while True:
        uc = np.bincount(users[alive], minlength=60)
        ic = np.bincount(items[alive], minlength=80)
        bad = alive & ((uc[users] < 5) | (ic[items] < 5))
        if not bad.any():
            break
        alive[np.flatnonzero(bad)[0]] = False
    assert (alive == keep).all()


def test_pair_filters_stats():
    users = np.array([0, 0, 1, 1, 0])
    items = np.array([0, 0, 0, 1, 1])
    stats = Counter()
    keep = apply_pair_filters(users, items, np.array([1, 2, 3, 4, 5]), InteractionFilters(kcore=2), stats)
    assert stats["dropped_duplicates"] == 1 and stats["dropped_kcore"] == 0
    assert keep.tolist() == [True, False, True, True, True]
