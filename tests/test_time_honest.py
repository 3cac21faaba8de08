"""Time-honest data: every seen set, feature count and served history comes from *all* of a
user's (or all users') interactions strictly before the request, under any split.

A hand-built timeline under ``global_temporal`` has interactions after the val cut that are no
row's target ("history only"); each structure is compared with a brute-force computation on the
raw table.
"""

from __future__ import annotations

import hydra
import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import PreparedDataset
from recsys.data.seen_items import SeenItems
from recsys.data.splitting import HISTORY_ONLY, TEST, VAL
from recsys.features.ranker_features import InteractionTimeline
from recsys.features.transitions import TimedTransitions
from recsys.serving.bundle_writer import all_seen, user_histories
from tests.conftest import compose_config

DAY_MS = 86_400_000
T0 = 1_600_000_000_000
MAX_HISTORY = 3


def _raw_tables(root) -> pd.DataFrame:
    """7 users, 10 items with metadata; two items without: one trained, one only a test target."""
    rng = np.random.default_rng(7)
    rows = []
    clock = iter(rng.permutation(200)[:100])  # distinct times: brute force needs no tie rule
    for u in range(7):
        items = rng.permutation(10)[: rng.integers(4, 9)]
        rows += [(f"u{u}", f"i{i}", T0 + int(next(clock)) * DAY_MS // 4) for i in items]
    rows.append(("u1", "no_meta_trained", T0))  # the first interaction of all: train
    rows.append(("u0", "no_meta_target", T0 + 60 * DAY_MS))  # the last of all: u0's test target
    raw = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    raw_dir = root / "raw"
    raw_dir.mkdir()
    raw.to_parquet(raw_dir / "interactions.parquet")
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)], "title": [f"item {i}" for i in range(10)]})
    items.to_parquet(raw_dir / "items.parquet")
    return raw


@pytest.fixture(scope="module")
def timeline_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("time_honest")
    raw = _raw_tables(root)
    cfg = compose_config(
        "prepare",
        [
            "data=tables",
            f"data.raw_dir={root / 'raw'}",
            f"paths.root_dir={root}",
            "text_encoder=hashing",
            "split=global_temporal",
            "split.val_quantile=0.6",
            "split.test_quantile=0.8",
            f"data.max_history={MAX_HISTORY}",
        ],
    )
    dataset = hydra.utils.instantiate(cfg.data.preparer).ensure()
    # the raw interactions in (user, time) order, with the dataset's indices
    idx_of = dict(zip(dataset.items["item_id"], dataset.items["item_idx"], strict=True))
    kept = raw[raw["item_id"].isin(idx_of)].sort_values(["user_id", "timestamp"], kind="stable")
    kept = kept.assign(item_idx=kept["item_id"].map(idx_of))
    return dataset, raw, kept


def _by_user(kept: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {u: g.reset_index(drop=True) for u, g in kept.groupby("user_id")}


def _split_rows(dataset: PreparedDataset, split: str) -> pd.DataFrame:
    return dataset.read_split(split).to_pandas()


def test_catalog_keeps_trained_items_without_metadata_and_drops_target_only_ones(timeline_case):
    dataset, raw, kept = timeline_case
    ids = set(dataset.items["item_id"])
    assert "no_meta_trained" in ids and "no_meta_target" not in ids
    kept_item = dataset.items.set_index("item_id").loc["no_meta_trained"]
    assert kept_item["text"] == "" and kept_item["is_warm"]  # kept with empty text: its ID carries it
    assert not dataset.text_embeddings()[kept_item["item_idx"]].any()
    stats = dataset.manifest["filter_stats"]
    assert stats["dropped_items_without_metadata_or_training"] == 1
    assert stats["dropped_interactions_uncatalogued_items"] == 1
    assert stats["dropped_eval_targets_uncatalogued_items"] == 1
    assert dataset.manifest["n_interactions"] == len(raw) - 1 == len(kept)
    assert dataset.manifest["split"] == "global_temporal"


def test_interactions_table_keeps_history_only_rows(timeline_case):
    dataset, _, kept = timeline_case
    table = dataset.interactions().to_pandas()
    assert len(table) == len(kept)
    assert (table["role"] == HISTORY_ONLY).sum() > 0  # the case the old row tables lost
    assert (table["role"] == TEST).sum() == len(_split_rows(dataset, "test"))
    assert (table["role"] == VAL).sum() == len(_split_rows(dataset, "val"))


def test_seen_sets_equal_brute_force(timeline_case):
    dataset, _, kept = timeline_case
    users = _by_user(kept)
    n_with_history_only = 0
    for split in ("val", "test"):
        seen = SeenItems.for_split(dataset, split)
        for i, row in enumerate(_split_rows(dataset, split).itertuples()):
            seq = users[row.user_id]
            before = seq[seq["timestamp"] < row.timestamp]
            expected = set(before["item_idx"])
            got = set(seen.indices[seen.indptr[i] : seen.indptr[i + 1]].tolist())  # keyed by the split's row
            assert got == expected, (split, row.user_id)
            n_with_history_only += len(expected) > MAX_HISTORY  # more than any capped history holds
    assert n_with_history_only > 0


def test_timeline_counts_equal_brute_force(timeline_case):
    dataset, _, kept = timeline_case
    timeline = InteractionTimeline.from_dataset(dataset)
    window = 5 * DAY_MS
    items = np.arange(2, dataset.n_items + 2)
    for row in _split_rows(dataset, "test").itertuples():
        got = timeline.counts(items[None, :], np.array([row.timestamp]), window)[0]
        t = kept["timestamp"].to_numpy()
        in_window = (t >= row.timestamp - window) & (t < row.timestamp)
        expected = [(kept["item_idx"].to_numpy()[in_window] == i).sum() for i in items]
        np.testing.assert_array_equal(got, expected)
        everything = timeline.counts(items[None, :], np.array([row.timestamp]), None)[0]
        np.testing.assert_array_equal(
            everything, [(kept["item_idx"].to_numpy()[t < row.timestamp] == i).sum() for i in items]
        )


def test_item_age_equals_brute_force(timeline_case):
    """Days from each item's first interaction before the request (−1 for none), and the feature:
    log1p of them, 0 for none."""
    import torch

    from recsys.features.ranker_features import item_age

    dataset, _, kept = timeline_case
    timeline = InteractionTimeline.from_dataset(dataset)
    items = np.arange(2, dataset.n_items + 2)
    t, item = kept["timestamp"].to_numpy(), kept["item_idx"].to_numpy()
    n_aged = 0
    for row in _split_rows(dataset, "test").itertuples():
        got = timeline.age_days(items[None, :], np.array([row.timestamp]))[0]
        for i, age in zip(items, got, strict=True):
            before = t[(item == i) & (t < row.timestamp)]
            expected = (row.timestamp - before.min()) / DAY_MS if len(before) else -1.0
            assert age == pytest.approx(expected, rel=1e-6)
            n_aged += bool(len(before))
        feature = item_age(torch.from_numpy(got)).numpy()
        np.testing.assert_allclose(feature, np.where(got >= 0, np.log1p(np.maximum(got, 0)), 0.0), rtol=1e-6)
    assert n_aged
    assert (timeline.age_days(items, int(t.min())) == -1).all()  # nothing before the first interaction
    # "now" (serving): every interaction is before it
    end = timeline.age_days(items, timeline.end)
    first = np.array([t[item == i].min() if (item == i).any() else -1 for i in items])
    np.testing.assert_allclose(end, np.where(first >= 0, (timeline.end - first) / DAY_MS, -1.0), rtol=1e-6)


def test_timed_transition_counts_equal_brute_force(timeline_case):
    dataset, _, kept = timeline_case
    transitions = TimedTransitions.from_dataset(dataset, window=3)
    pairs = []  # (source, target, target time) within 3 steps of one user's sequence
    for seq in _by_user(kept).values():
        items, times = seq["item_idx"].tolist(), seq["timestamp"].tolist()
        pairs += [(items[i - s], items[i], times[i]) for i in range(len(items)) for s in (1, 2, 3) if i >= s]
    candidates = np.arange(2, dataset.n_items + 2)
    users = _by_user(kept)
    for row in _split_rows(dataset, "test").itertuples():
        seq = users[row.user_id]
        last = seq[seq["timestamp"] < row.timestamp]["item_idx"].tolist()[::-1][:3]
        last += [0] * (3 - len(last))
        got = transitions.counts(np.array([last]), candidates[None, :], np.array([row.timestamp]))[0]
        expected = [
            sum(1 for src, dst, t in pairs if src in last and src > 0 and dst == c and t < row.timestamp)
            for c in candidates
        ]
        np.testing.assert_array_equal(got, expected)


def test_bundle_histories_cover_every_user_with_all_interactions(timeline_case):
    dataset, _, kept = timeline_case
    users = user_histories(dataset, MAX_HISTORY)
    assert len(users) == dataset.n_users == kept["user_id"].nunique()
    by_user = _by_user(kept)
    for row in users.itertuples():
        seq = by_user[row.user_id].tail(MAX_HISTORY)
        assert row.history == seq["item_id"].tolist()
        assert row.timestamps == seq["timestamp"].tolist()
    indptr, flat = all_seen(dataset, users["user_idx"].to_numpy())
    for i, row in enumerate(users.itertuples()):
        assert set(flat[indptr[i] : indptr[i + 1]].tolist()) == set(by_user[row.user_id]["item_idx"])


def test_global_temporal_bundle_serves_a_user_whose_last_interactions_are_history_only(tmp_path):
    """Two-tower + ranker on a tiny global_temporal split, exported and served: every user is in
    the bundle, with their history-only interactions as the end of their history and excluded."""
    from recsys.serving.graph import InferenceGraph
    from recsys.train import train
    from tests.conftest import export_bundle
    from tests.test_train import TINY

    common = [f"paths.root_dir={tmp_path}", *TINY, "split=global_temporal"]
    train(compose_config("train", [*common, f"paths.output_dir={tmp_path}/tt", "trainer.max_epochs=1"]))
    retrieval = tmp_path / "tt" / "checkpoints" / "last.ckpt"
    metrics = train(
        compose_config(
            "train",
            [
                f"paths.root_dir={tmp_path}",
                "trainer=fast_dev",
                "~callbacks.rich_progress_bar",
                "experiment=ranker",
                f"retrieval_ckpt={retrieval}",
                f"paths.output_dir={tmp_path}/ranker",
                "data.num_candidates=30",
                "model.hidden=[16]",
            ],
        )
    )
    assert 0.0 <= metrics["two_stage/ndcg@10"] <= 1.0 and "two_stage/mrr@30" in metrics
    # no twin under a split cut by time (nothing a user's "last" to hold out): the val lists train it
    assert (
        metrics["holdout/checkpoint"].startswith("none (")
        and "GlobalTemporalSplitter" in metrics["holdout/checkpoint"]
    )
    ranker = tmp_path / "ranker" / "checkpoints" / "last.ckpt"
    from recsys.candidates.settings import CandidateSettings

    assert CandidateSettings.from_checkpoint(ranker).features_as_of_request  # resolved from the split
    # the category-popularity crosses read training counts: refused where features are as of a request
    refused = [f"paths.root_dir={tmp_path}", "trainer=fast_dev", "~callbacks.rich_progress_bar"]
    refused += ["experiment=ranker", f"retrieval_ckpt={retrieval}", f"paths.output_dir={tmp_path}/refused"]
    refused += ["data.num_candidates=30", "model.hidden=[16]", "model.features=[score,category_popularity]"]
    with pytest.raises(ValueError, match="not counts as of each request"):
        train(compose_config("train", refused))
    bundle = export_bundle({"retrieval": retrieval, "ranker": ranker}, tmp_path / "bundle")
    graph = InferenceGraph.from_bundle(bundle)
    dataset = PreparedDataset.load(graph.bundle.manifest["dataset"]["path"])
    assert graph.bundle.manifest["candidates"]["features_as_of_request"] is True
    assert len(graph.bundle.users) == dataset.n_users
    table = dataset.interactions().to_pandas()
    last_role = table.groupby("user_idx")["role"].last()
    user_idx = int(last_role.index[last_role == HISTORY_ONLY][0])  # ends with history-only rows
    user_id = str(graph.bundle.users.set_index("user_idx").loc[user_idx, "user_id"])
    own = table[table["user_idx"] == user_idx]
    item_id = dataset.items.set_index("item_idx")["item_id"]
    max_history = graph.max_history
    assert graph.bundle.users.set_index("user_id").loc[user_id, "history"].tolist() == [
        item_id[i] for i in own["item_idx"].tail(max_history)
    ]
    out = graph.recommend(user_id=user_id, top_k=10)
    assert out["strategy"] == "two_stage" and len(out["items"]) == 10
    consumed = set(item_id[own["item_idx"]])
    assert not consumed & {r["item_id"] for r in out["items"]}  # history-only items included
