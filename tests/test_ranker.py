"""Stage two on tiny synthetic data: candidates, ranker features, two-stage metrics, the bundle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.candidates.build import build_candidates
from recsys.candidates.settings import CandidateSettings
from recsys.data.seen_items import SeenItems
from recsys.evaluation.ranking import reranked, two_stage_ranks
from recsys.features.ranker_features import FEATURES, InteractionTimeline, ItemFeatureTables
from recsys.features.transitions import ItemTransitions
from recsys.models.ranker_module import RankerModule, ranker_loss
from recsys.models.two_tower_module import TwoTowerModule
from recsys.serving.bundle import Bundle
from recsys.utils.artifacts import ManifestError
from tests.conftest import K, assert_evaluation_figures, candidate_datamodule, compose_config, export_bundle

NET = {"dropout": 0.0, "cold_candidates": "rank"}  # RankerNet's remaining arguments in these tests


@pytest.fixture(scope="module")
def retrieval(trained) -> TwoTowerModule:
    return TwoTowerModule.load_from_checkpoint(
        trained["retrieval"], map_location="cpu", weights_only=True
    ).eval()


def test_two_stage_ranks_hand_computed():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [0.3, 0.2, 0.1, 0.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, True], [True, True, False, False]])
    target_pos = torch.tensor([2, 0, -1])
    # row 0: target 0.5 ties with 0.5 (pessimistic) and is below 0.9 -> rank 2; row 1: top -> 0; row 2: miss
    assert two_stage_ranks(scores, mask, target_pos, n_catalog=1000).tolist() == [2, 0, 1000]
    cands = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 0, 0]])
    assert reranked(scores, cands, mask)[2].tolist()[:2] == [6, 5]


def test_ranker_losses_hand_computed():
    logits = torch.tensor([[2.0, 0.0, -1.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # listwise: only row 0 has a positive; softmax over its 2 valid candidates
    expected = -(0.0 - math.log(math.exp(2.0) + math.exp(0.0)))
    assert ranker_loss(logits, labels, mask, "listwise").item() == pytest.approx(expected, rel=1e-6)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms = [
        -math.log(1 - sig(2.0)),
        -math.log(sig(0.0)),
        -math.log(1 - sig(1.0)),
        -math.log(1 - sig(1.0)),
        -math.log(1 - sig(0.0)),
    ]
    assert ranker_loss(logits, labels, mask, "bce").item() == pytest.approx(sum(terms) / 5, rel=1e-6)


def test_timeline_counts_trailing_window():
    timeline = InteractionTimeline.from_arrays(np.array([2, 2, 2, 3]), np.array([100, 200, 300, 250]))
    counts = timeline.counts(np.array([[2, 3], [2, 3]]), np.array([301, 250]), window_ms=150)
    # row 0: [151, 301) holds item 2 at 200, 300 and item 3 at 250; row 1: [100, 250) holds 100, 200
    assert counts.tolist() == [[2, 1], [2, 0]]
    assert timeline.end == 301


def test_transition_counts_hand_computed(retrieval):
    # sequences 2 3 4 and 3 4: with window 2, (2→3) 1, (2→4) 1, (3→4) 2
    matrix = sp.csr_matrix(([1, 1, 2], ([2, 2, 3], [3, 4, 4])), shape=(6, 6), dtype=np.float32)
    transitions = ItemTransitions(matrix, window=2)
    last = np.array([[3, 2], [5, 0]])  # most recent first; 0 = no item
    assert transitions.counts(last, np.array([[4, 3, 5], [4, 2, 3]])).tolist() == [[3, 1, 0], [0, 0, 0]]
    # built from a dataset: every train row's target follows its last history item
    built = ItemTransitions.from_dataset(retrieval._dataset, ("train",), window=1)
    train = retrieval._dataset.read_split("train").to_pandas().head(50)
    for history, target in zip(train["history"], train["target"], strict=True):
        assert built.matrix[history[-1], target] >= 1


def test_transition_lookup_matches_scipy_indexing():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 40, 300), rng.integers(0, 40, 300)  # duplicates included
    matrix = sp.csr_matrix((np.ones(300, np.float32), (rows, cols)), shape=(40, 40))
    transitions = ItemTransitions(matrix.copy())
    q_rows, q_cols = rng.integers(0, 40, (7, 50)), rng.integers(0, 40, (7, 50))
    expected = np.asarray(matrix[q_rows.ravel(), q_cols.ravel()]).reshape(7, 50)
    np.testing.assert_array_equal(transitions.lookup(q_rows, q_cols), expected)
    # items added after the matrix was built (ids past its shape) have no transitions
    assert transitions.lookup(np.array([3, 45]), np.array([45, 3])).tolist() == [0, 0]
    assert ItemTransitions(sp.csr_matrix((5, 5), dtype=np.float32)).lookup(
        np.array([1]), np.array([2])
    ).tolist() == [0]


@pytest.mark.parametrize("batch", [1, 40])  # one serving request (row by row); a training batch
def test_transition_counts_match_scipy_sums(batch):
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(1, 30, 400), rng.integers(1, 30, 400)
    matrix = sp.csr_matrix((np.ones(400, np.float32), (rows, cols)), shape=(30, 30))
    transitions = ItemTransitions(matrix.copy())
    last = rng.integers(0, 34, (batch, 3))  # 0 = none; 30..33 = items added after the matrix
    cands = rng.integers(0, 34, (batch, 20))
    dense = np.zeros((35, 35), np.float32)
    dense[:30, :30] = matrix.toarray()
    expected = dense[last[:, :, None], cands[:, None, :]].sum(axis=1)
    np.testing.assert_array_equal(transitions.counts(last, cands), expected)
    assert expected.sum() > 0


def test_candidates_exclude_seen_items_and_never_inject_the_positive(retrieval):
    dataset = retrieval._dataset
    tables = ItemFeatureTables.from_dataset(dataset)
    timeline = InteractionTimeline.from_dataset(dataset)
    transitions = ItemTransitions.from_dataset(dataset, ("train", "val"))
    settings = CandidateSettings(
        num_candidates=K, last_n=5, recent_window_days=1.0, max_history=20, features_as_of_request=False
    )
    cands = build_candidates(retrieval, dataset, "test", settings, tables, timeline, transitions)
    seen = SeenItems.for_split(dataset, "test")
    catalog = retrieval.encode_catalog()
    n_missed = 0
    for row in range(len(cands)):
        seen_items = set(seen.indices[seen.indptr[row] : seen.indptr[row + 1]].tolist())  # the split's row
        listed = cands.candidates[row][cands.candidates[row] > 0].tolist()
        assert not seen_items & set(listed)
        # brute force: the top K unseen items by score are exactly the list
        scores = (catalog[2:] @ cands.user_vectors[row]).numpy()
        order = [i + 2 for i in np.argsort(-scores, kind="stable") if i + 2 not in seen_items][:K]
        assert set(order) == set(listed)
        target = int(cands.targets[row])
        pos = int(cands.target_pos[row])
        assert (pos >= 0) == (target in listed) == (int(cands.retrieval_rank[row]) < K)
        n_missed += pos < 0
    assert n_missed > 0, "tiny case should contain retrieval misses (the positive is then absent)"
    assert cands.features.shape == (len(cands), K, len(FEATURES))
    rank = cands.features[..., FEATURES.index("rank")]
    assert torch.allclose(rank[0], torch.log1p(torch.arange(K, dtype=torch.float32)))
    score = cands.features[..., FEATURES.index("score")]
    assert (score[:, :-1] >= score[:, 1:] - 1e-6).all()  # retrieval order


def test_two_stage_metric_equals_brute_force(trained):
    metrics = trained["metrics"]
    for key in (
        "two_stage/ndcg@10",
        "two_stage/recall@10",
        "retrieval/ndcg@10",
        "ranking/auc",
        "ranking/ndcg@10",
    ):
        assert key in metrics
    ranker = RankerModule.load_from_checkpoint(
        trained["ranker"], map_location="cpu", weights_only=True
    ).eval()
    dm = candidate_datamodule(trained["retrieval"], num_candidates=K, seed=42)
    dm.setup()
    lists = dm.splits["test"]
    batch = lists[list(range(len(lists)))]
    with torch.no_grad():
        logits = ranker(batch).numpy()
    assert ranker.hparams.cold_candidates == "rank"
    is_cold = batch["features"][..., FEATURES.index("is_cold")].numpy() > 0
    ranker.net.cold_candidates = "keep"  # the other policy, through the module's own path
    with torch.no_grad():
        kept = ranker._final(batch, torch.from_numpy(logits)).numpy()
    ndcg, recall_k, lists_with_cold = [], [], 0
    for row in range(len(lists)):
        valid = batch["candidates"][row].numpy() > 0
        items = batch["candidates"][row].numpy()[valid]
        order = items[np.argsort(-logits[row][valid], kind="stable")]
        hits = np.flatnonzero(order == int(batch["target"][row]))
        pos = int(hits[0]) if len(hits) else 10**9
        ndcg.append(1 / math.log2(pos + 2) if pos < 10 else 0.0)
        recall_k.append(float(pos < K))
        # keep: cold candidates stay where retrieval put them; the warm ones fill the rest by score
        cold = is_cold[row][valid]
        warm = np.flatnonzero(~cold)
        expected = items.copy()
        expected[~cold] = items[warm[np.argsort(-logits[row][valid][warm], kind="stable")]]
        np.testing.assert_array_equal(items[np.argsort(-kept[row][valid], kind="stable")], expected)
        lists_with_cold += bool(cold.any())
    assert lists_with_cold > 0, "the tiny data should put cold items into some lists"
    assert metrics["two_stage/ndcg@10"] == pytest.approx(np.mean(ndcg), abs=1e-6)
    # the ranker re-orders the retrieved K: recall@K is retrieval's
    assert np.mean(recall_k) == pytest.approx(metrics["retrieval/recall@50"], abs=1e-9)
    # the cold-first random baseline beside the cold segments, at the ks within K
    assert metrics["two_stage_cold/n_users"] > 0  # synthetic fresh releases
    n_cold = metrics["cold_first_random/n_cold_items"]
    assert metrics["cold_first_random/recall@10"] == min(1.0, 10 / n_cold)
    assert "cold_first_random/recall@100" not in metrics  # beyond the K = 50 re-ranked


def test_export_bundle_round_trip_and_tamper(trained, retrieval, tmp_path):
    export_bundle(trained, tmp_path / "bundle")
    bundle = Bundle.load(tmp_path / "bundle")
    dataset = retrieval._dataset
    assert len(bundle.items) == dataset.n_items and len(bundle.index) == dataset.n_items
    assert bundle.item_embeddings.shape == (dataset.n_items, retrieval.hparams.dim)
    ranker = RankerModule.load_from_checkpoint(trained["ranker"], map_location="cpu", weights_only=True)
    assert bundle.manifest["ranker"]["features"] == list(ranker.hparams.features)
    assert bundle.manifest["ranker"]["cold_candidates"] == "rank" and bundle.ranker.cold_candidates == "rank"
    # the default ranker corrects the retrieval logit: its scale travels with the net
    prior = 1 / retrieval.hparams.temperature
    assert bundle.manifest["ranker"]["prior_scale"] == pytest.approx(prior) == bundle.ranker.prior_scale
    assert bundle.manifest["candidates"]["num_candidates"] == K and bundle.transitions.matrix.nnz > 0
    # histories are the users' most recent items as item_id strings, ending with the test target
    test = dataset.read_split("test").to_pandas()
    id_of = dataset.items.set_index("item_idx")["item_id"]
    row = test.iloc[0]
    history = bundle.users.set_index("user_id").loc[row["user_id"], "history"]
    assert list(history) == [id_of[i] for i in [*row["history"], row["target"]]][-20:]
    # the exported towers reproduce the trained model
    hist = torch.as_tensor(np.array(row["history"][-20:]))[None]
    lengths = torch.tensor([hist.shape[1]])
    with torch.no_grad():
        expected = retrieval.encode_users(hist, lengths)
        vectors = torch.from_numpy(bundle.item_embeddings[hist - 2])
        np.testing.assert_allclose(bundle.user_tower(vectors, lengths), expected, atol=1e-5)
        cold = np.flatnonzero(~bundle.items["is_warm"].to_numpy())
        assert len(cold), "synthetic data has fresh (cold) items"
        idx = torch.as_tensor(bundle.items["item_idx"].to_numpy()[cold])
        np.testing.assert_allclose(
            bundle.item_tower.encode_text(torch.from_numpy(bundle.text_embeddings[idx])),
            retrieval.item_tower(idx),
            atol=1e-5,
        )
    # a tampered file is refused with the file named
    users = tmp_path / "bundle" / "users.parquet"
    users.write_bytes(users.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ManifestError, match="users.parquet"):
        Bundle.load(tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"index.faiss", "ranker.safetensors", "user_tower.safetensors"}


@pytest.mark.parametrize("prior_scale", [0.0, 5.0])
@pytest.mark.parametrize("use_embeddings", [True, False])
def test_factored_single_user_scoring_equals_forward(use_embeddings, prior_scale):
    from recsys.features.ranker_features import feature_columns
    from recsys.models.ranker_net import RankerNet

    torch.manual_seed(0)
    columns = feature_columns(["score", "transition"])
    net = RankerNet(
        8, columns, **NET, use_embeddings=use_embeddings, hidden=[16, 4], prior_scale=prior_scale
    ).eval()
    if prior_scale:  # a trained correction (it starts at zero)
        for p in net.parameters():
            torch.nn.init.normal_(p)
    user, items, feats = torch.randn(8), torch.randn(30, 8), torch.randn(30, len(FEATURES))
    with torch.no_grad():
        expected = net(user[None], items[None], feats[None])[0]
        scored = net.score_user(user, items if use_embeddings else None, feats)  # (None: the graph's call)
        torch.testing.assert_close(scored, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_embeddings", [True, False])
def test_score_prior_starts_as_retrieval_and_learns_a_correction(use_embeddings):
    from recsys.features.ranker_features import feature_columns
    from recsys.models.ranker_net import RankerNet

    torch.manual_seed(0)
    columns = feature_columns(["score", "transition"])
    net = RankerNet(8, columns, **NET, use_embeddings=use_embeddings, hidden=[16], prior_scale=1 / 0.05)
    user, items, feats = torch.randn(2, 8), torch.randn(2, 5, 8), torch.randn(2, 5, len(FEATURES))
    feats[0, :, FEATURES.index("score")] = torch.tensor([0.9, 0.5, 0.4, 0.1, -0.2])
    feats[0, :, FEATURES.index("transition")] = torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0])
    # untrained: the retrieval logit itself (score / temperature), so the retrieval order
    torch.testing.assert_close(net(user, items, feats)[0], torch.tensor([18.0, 10.0, 8.0, 2.0, -4.0]))
    # the correction learns what retrieval lacks: the item with transitions climbs the list
    labels = torch.zeros(2, 5)
    labels[:, 3] = 1.0
    feats[1] = feats[0]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    mask = torch.ones(2, 5, dtype=torch.bool)
    for _ in range(100):
        optimizer.zero_grad()
        ranker_loss(net(user, items, feats), labels, mask, "listwise").backward()
        optimizer.step()
    net.eval()
    assert net(user, items, feats)[0].argmax().item() == 3
    with pytest.raises(ValueError, match="prior_scale"):
        RankerNet(8, columns, **NET, use_embeddings=True, hidden=[16], prior_scale=-1.0)


def test_evaluate_reports_every_stage_and_draws_the_figures(trained, tmp_path):
    from recsys.evaluate import evaluate

    cfg = compose_config(
        "evaluate",
        [
            f"paths.root_dir={trained['root']}",
            f"paths.output_dir={tmp_path}",
            "data=synthetic",
            "text_encoder=hashing",
            "data.preparer.source.generator.n_users=300",
            "data.preparer.source.generator.n_items=400",
            "data.max_history=20",
            "trainer=fast_dev",
            "trainer.limit_test_batches=1.0",
            f"ckpt_path={trained['retrieval']}",
            f"ranker_ckpt={trained['ranker']}",
        ],
    )
    metrics = evaluate(cfg)
    # the same numbers as the ranker's own test run
    for key in ("two_stage/ndcg@10", "ranking/auc"):
        assert metrics[key] == pytest.approx(trained["metrics"][key])
    assert {"retrieval/ndcg@10", "popularity/ndcg@10", "retrieval_warm/recall@10"} <= set(metrics)
    curves = json.loads((tmp_path / "curves.json").read_text())
    recall = curves["retrieval"]["all"]["recall"]
    assert len(recall) == 1000 and recall == sorted(recall)  # recall@K never decreases in K
    assert recall[9] == pytest.approx(metrics["retrieval/recall@10"])
    assert len(curves["two_stage"]["all"]["recall"]) == K  # two-stage ranks are defined up to K
    assert_evaluation_figures(metrics["figures"])


def test_holdout_folds_partition_the_val_users(trained):

    def split_users(fold: int) -> tuple[set, set]:
        dm = candidate_datamodule(
            trained["retrieval"], num_candidates=K, holdout_fraction=0.25, holdout_fold=fold
        )
        dm.setup()
        return (set(dm.splits["train"].candidates.user_idx), set(dm.splits["val"].candidates.user_idx))

    folds = [split_users(fold) for fold in range(4)]
    everyone = folds[0][0] | folds[0][1]
    for train, val in folds:
        assert val and not train & val and train | val == everyone
    for a in range(4):  # cross-validation: each user validates in exactly one fold
        for b in range(a + 1, 4):
            assert not folds[a][1] & folds[b][1]
    assert sum(len(val) for _, val in folds) >= len(everyone) - 2  # the rounding remainder
    with pytest.raises(ValueError, match="holdout_fold"):
        candidate_datamodule(trained["retrieval"], holdout_fraction=0.25, holdout_fold=4)


def test_refit_trains_on_every_val_user_and_validates_on_none(trained):

    refit = candidate_datamodule(trained["retrieval"], num_candidates=K, holdout_fraction=0)
    refit.setup()
    folded = candidate_datamodule(trained["retrieval"], num_candidates=K, holdout_fraction=0.25)
    folded.setup()
    everyone = set(folded.splits["train"].candidates.user_idx) | set(folded.splits["val"].candidates.user_idx)
    assert len(refit.splits["train"]) == len(folded.splits["train"]) + len(folded.splits["val"])
    assert set(refit.splits["train"].candidates.user_idx) == everyone
    assert "val" not in refit.splits and refit.val_dataloader() == []
    for fraction, fold in ((0, 1), (-0.1, 0), (1.0, 0)):
        with pytest.raises(ValueError, match="holdout_f"):
            candidate_datamodule(trained["retrieval"], holdout_fraction=fraction, holdout_fold=fold)


def test_ranker_refits_and_tests_its_last_epoch(trained):
    metrics = trained["metrics"]
    # experiment=ranker: fixed epochs, every val user trains, the last epoch is the tested checkpoint
    last = metrics["epochs_done"] - 1
    assert last > 0 and metrics["best_checkpoint"].endswith(f"epoch_{last:03d}.ckpt")
    assert metrics["val_best"] is None  # nobody held out, nothing validated


def test_ranker_with_held_out_users_reports_its_last_epochs_validation(trained, tmp_path):
    import pandas as pd

    from recsys.train import train

    overrides = [
        f"paths.root_dir={trained['root']}",
        "trainer=fast_dev",
        "experiment=ranker",
        f"retrieval_ckpt={trained['retrieval']}",
        f"paths.output_dir={tmp_path}",
        f"data.num_candidates={K}",
        "data.batch_size=16",
        "data.holdout_fraction=0.25",
        "trainer.max_epochs=3",
        "model.hidden=[32]",
        "~callbacks.rich_progress_bar",
    ]
    metrics = train(compose_config("train", overrides))
    assert metrics["best_checkpoint"].endswith("epoch_002.ckpt")
    log = pd.read_csv(next(tmp_path.glob("csv/**/metrics.csv"))).dropna(subset=["val/ndcg@10"])
    assert len(log) == 3  # validated every epoch
    # the tested (last) epoch's val/ndcg@10, not a best-of selection
    assert metrics["val_best"] == pytest.approx(float(log["val/ndcg@10"].iloc[-1]))


@pytest.fixture(scope="module")
def holdout_ckpt(trained) -> Path:
    """The tiny retrieval run again with ``split.skip_last=2`` (fitted before every user's served
    val and test interactions)."""
    from recsys.train import train
    from tests.test_train import TINY

    root, out = trained["root"], trained["root"] / "holdout"
    overrides = [f"paths.root_dir={root}", *TINY, f"paths.output_dir={out}", "trainer.max_epochs=2"]
    train(compose_config("train", [*overrides, "split.skip_last=2"]))
    return out / "checkpoints" / "last.ckpt"


def test_holdout_lists_train_the_ranker_on_the_served_models_last_training_targets(trained, holdout_ckpt):
    """With ``holdout_ckpt`` the ranker's lists are the holdout model's lists for its test targets:
    one per user, each at the position of the served data's last training target (never a served
    val or test target); the test lists stay the served model's."""
    from recsys.data.dataset import PreparedDataset
    from recsys.data.splitting import TRAIN
    from recsys.models.two_tower_module import TwoTowerModule

    dm = candidate_datamodule(
        trained["retrieval"], num_candidates=K, holdout_fraction=0.25, holdout_ckpt=holdout_ckpt
    )
    dm.setup()
    served = PreparedDataset.load(dm.dataset.path)
    holdout = PreparedDataset.load(
        TwoTowerModule.load_from_checkpoint(holdout_ckpt, weights_only=True).hparams.dataset_dir
    )
    role = served.interactions(["user_idx", "role"]).to_pandas()
    last_train = role[role["role"] == TRAIN].reset_index().groupby("user_idx")["index"].last()
    rows = holdout.read_split("test", ["user_idx", "target", "position"]).to_pandas().set_index("user_idx")
    assert (role["role"].to_numpy()[rows["position"]] == TRAIN).all()  # no served val or test target
    assert (rows["position"] == last_train.loc[rows.index]).all()  # the last training target
    lists = {s: dm.splits[s].candidates for s in ("train", "val")}
    assert not set(lists["train"].user_idx) & set(lists["val"].user_idx)
    users = np.concatenate([lists[s].user_idx for s in lists])
    targets = np.concatenate([lists[s].targets.numpy() for s in lists])
    assert sorted(users) == sorted(rows.index) and (targets == rows["target"].loc[users].to_numpy()).all()
    test_users = served.read_split("test", ["user_idx"]).column(0).to_numpy()
    assert sorted(dm.splits["test"].candidates.user_idx) == sorted(test_users)
    with pytest.raises(ValueError, match="split.skip_last=2"):
        candidate_datamodule(
            trained["retrieval"], num_candidates=K, holdout_ckpt=trained["retrieval"]
        ).setup()


@pytest.mark.slow
def test_a_ranker_on_holdout_lists_learns_from_features_only(trained, holdout_ckpt, tmp_path):
    """The holdout model's vectors live in another space than the served model's: a ranker that
    reads [u, i, u⊙i] is refused on its lists; on features only it trains and tests on the served lists."""
    from recsys.train import train

    overrides = [
        f"paths.root_dir={trained['root']}",
        "trainer=fast_dev",
        "experiment=ranker",
        f"retrieval_ckpt={trained['retrieval']}",
        f"holdout_ckpt={holdout_ckpt}",
        f"paths.output_dir={tmp_path}",
        f"data.num_candidates={K}",
        "data.batch_size=16",
        "model.hidden=[32]",
        "trainer.max_epochs=1",
        "~callbacks.rich_progress_bar",
    ]
    with pytest.raises(ValueError, match="use_embeddings=false"):
        train(compose_config("train", [*overrides, "model.use_embeddings=true"]))
    metrics = train(compose_config("train", overrides))  # features only: experiment=ranker's default
    assert metrics["retrieval/ndcg@10"] == trained["metrics"]["retrieval/ndcg@10"]  # the served test lists
    assert 0.0 <= metrics["two_stage/ndcg@10"] <= 1.0


def _with_test_targets_replaced(dataset, path: Path, replace: dict[int, int]):
    """A copy of ``dataset`` whose test target of each user in ``replace`` (its split row and its
    interaction) is the given item instead."""
    import pyarrow as pa

    from recsys.data.dataset import SPLITS, PreparedDataset
    from recsys.data.splitting import TEST

    def with_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
        return table.set_column(
            table.schema.get_field_index(name), name, pa.array(values, type=table[name].type)
        )

    splits = {s: dataset.read_split(s) for s in SPLITS}
    test = splits["test"]
    users = test["user_idx"].to_numpy()
    assert len(np.unique(users)) == len(users), "one test row a user in this case"
    splits["test"] = with_column(
        test,
        "target",
        np.array([replace.get(u, t) for u, t in zip(users, test["target"].to_numpy(), strict=True)]),
    )
    inter = dataset.interactions()
    item, user = inter["item_idx"].to_numpy().copy(), inter["user_idx"].to_numpy()
    for i in np.flatnonzero(inter["role"].to_numpy() == TEST):
        item[i] = replace.get(int(user[i]), item[i])
    info = {k: v for k, v in dataset.manifest.items() if k not in ("files", "created_at", "versions")}
    return PreparedDataset.write(
        path,
        dataset.items,
        splits,
        with_column(inter, "item_idx", item),
        dataset.text_embeddings(mmap=False),
        info,
    )


@pytest.mark.parametrize("as_of_request", [True, False])
def test_no_feature_reads_the_request_target(retrieval, tmp_path, as_of_request):
    """Leakage probe: a retrieved test target replaced by another item of the same list changes no
    candidate, feature or ranker score of that request (nor of any request before it), so a
    ranker can only score a target at random from what it is given. Each probe changes one
    request's target: another user's interaction before a request is known to it."""
    from recsys.candidates.datamodule import model_lists
    from recsys.features.ranker_features import feature_columns
    from recsys.models.ranker_net import RankerNet

    dataset = retrieval._dataset
    settings = CandidateSettings(
        num_candidates=K,
        last_n=5,
        recent_window_days=1.0,
        max_history=20,
        features_as_of_request=as_of_request,
    )
    real = model_lists(retrieval, dataset, settings, ("test",))[0]["test"]
    times = dataset.read_split("test")["timestamp"].to_numpy()
    torch.manual_seed(0)  # any ranker over every feature and the vectors
    net = RankerNet(
        real.user_vectors.shape[1],
        feature_columns(FEATURES),
        **NET,
        use_embeddings=True,
        hidden=[8],
        prior_scale=0.0,
    ).eval()
    catalog = retrieval.encode_catalog()
    rng = np.random.default_rng(7)
    for n, row in enumerate(rng.choice(np.flatnonzero(real.target_pos.numpy() >= 0), 8, replace=False)):
        others = real.candidates[row][
            (real.candidates[row] > 0) & (real.candidates[row] != real.targets[row])
        ]
        other = int(others[rng.integers(len(others))])
        probe = _with_test_targets_replaced(dataset, tmp_path / f"probe{n}", {int(real.user_idx[row]): other})
        fake = model_lists(retrieval, probe, settings, ("test",))[0]["test"]
        assert int(fake.targets[row]) == other != int(real.targets[row])
        before = times <= times[row]  # this request and every one before it
        assert torch.equal(fake.candidates[before], real.candidates[before])
        assert torch.equal(fake.features[before], real.features[before]), (
            f"row {row}: a feature reads its target"
        )
        items = catalog[real.candidates[row]][None]
        with torch.no_grad():
            assert torch.equal(
                net(real.user_vectors[row][None], items, real.features[row][None]),
                net(fake.user_vectors[row][None], items, fake.features[row][None]),
            )


def test_cold_policy_study_scores_the_served_models_val_lists(trained):
    """``study_cold_policy.py``: the run's ranker on its retrieval model's validation lists, under
    each policy: the same lists (retrieval figures equal), every val row scored once, and ``keep``
    leaves each cold target where retrieval put it."""
    from experiments.study_cold_policy import val_lists_results
    from recsys.data.dataset import PreparedDataset

    by_policy = val_lists_results(trained["root"] / "ranker")
    rank, keep = by_policy["rank"], by_policy["keep"]
    retrieval = {k: v for k, v in rank.items() if k.startswith("retrieval")}
    assert retrieval and retrieval == {k: keep[k] for k in retrieval}
    dataset = PreparedDataset.load(
        TwoTowerModule.load_from_checkpoint(
            trained["retrieval"], map_location="cpu", weights_only=True
        ).hparams.dataset_dir
    )
    assert rank["retrieval/n_users"] == dataset.n_rows("val")
    for k in (10, 50):
        if keep.get("retrieval_cold/n_users"):
            assert keep[f"two_stage_cold/recall@{k}"] == keep[f"retrieval_cold/recall@{k}"]
