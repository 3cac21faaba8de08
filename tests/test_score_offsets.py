"""cold_score_offset: text-only items' scores shifted by b in evaluation, candidates and serving
alike (issue 15), carried by the index as one extra coordinate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.index.faiss_index import FlatIndex, HNSWIndex
from recsys.index.score_offsets import index_dim, index_queries, index_vectors


def test_extra_coordinate_by_hand():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    cold = np.array([False, True, True])
    stored = index_vectors(items, cold, 0.25)
    np.testing.assert_array_equal(stored, np.array([[1, 0, 0], [0, 1, 0.25], [0.6, 0.8, 0.25]], np.float32))
    query = index_queries(np.array([[0.8, 0.6]], np.float32), 0.25)
    np.testing.assert_array_equal(query, np.array([[0.8, 0.6, 1.0]], np.float32))
    # u·v + b·cold: 0.8, 0.6 + 0.25 = 0.85, 0.96 + 0.25 = 1.21
    np.testing.assert_allclose(query @ stored.T, [[0.8, 0.85, 1.21]], rtol=1e-6)
    assert index_dim(2, 0.25) == 3 and index_dim(2, 0.0) == 2
    np.testing.assert_array_equal(index_vectors(items, cold, 0.0), items)  # no offset: no extra coordinate


BACKENDS = {
    "flat": FlatIndex,
    "hnsw": lambda d: HNSWIndex(d, m=16, ef_construction=200, ef_search=400, storage="flat"),
}


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_index_ranks_by_the_offset_score(kind):
    backend = BACKENDS[kind]
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    cold = rng.random(300) < 0.2
    users = rng.normal(size=(4, 8)).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    ids = np.arange(2, 302)
    index = backend(index_dim(8, 0.3)).build(ids, index_vectors(items, cold, 0.3))
    _, found = index.search(index_queries(users, 0.3), 20)
    expected = ids[np.argsort(-(users @ items.T + 0.3 * cold), axis=1, kind="stable")[:, :20]]
    np.testing.assert_array_equal(found, expected)
    # the offset changes the lists: without it fewer cold items make the top 20
    plain = ids[np.argsort(-(users @ items.T), axis=1, kind="stable")[:, :20]]
    assert cold[found - 2].sum() > cold[plain - 2].sum()


def test_the_model_scores_text_only_items_with_the_offset(tmp_path_factory):
    from recsys.data.dataset import item_arrays
    from tests.test_negative_pool import _model
    from tests.test_prepare import _prepare

    dataset = _prepare(tmp_path_factory.mktemp("offset"), "synthetic")
    plain = _model(dataset, "catalog", -1).eval()
    shifted = _model(dataset, "catalog", -1, cold_score_offset=0.2).eval()
    shifted.load_state_dict(plain.state_dict())
    warm = torch.as_tensor(item_arrays(dataset)["is_warm"])
    items = torch.arange(2, dataset.n_items + 2)
    with torch.no_grad():
        catalog = plain.encode_catalog()
        user = plain.encode_users(items[None, :5], torch.tensor([5])).float()
        base = plain.retrieval_scores(user, catalog, items)
        torch.testing.assert_close(base, user @ catalog[items].T)
        moved = shifted.retrieval_scores(user, catalog, items) - base
    torch.testing.assert_close(moved[0], 0.2 * (~warm[items]).float())
    assert (~warm[items]).any() and warm[items].any()
    # per-row candidate lists ([B, M] item_idx, 0 = padding) get the same shift
    cand = torch.stack([items[:6], torch.cat([items[6:11], torch.zeros(1, dtype=torch.long)])])
    with torch.no_grad():
        got = shifted.retrieval_scores(user.expand(2, -1), catalog, cand)
    want = (user @ catalog[cand].transpose(1, 2)).squeeze(1) + 0.2 * (~warm[cand]).float() * (cand > 1)
    torch.testing.assert_close(got, want)


def test_a_bundle_serves_the_offset_it_was_trained_with(trained, tmp_path):
    """Checkpoint hparam -> bundle manifest -> served retrieval order, new items included."""
    from recsys.serving.graph import InferenceGraph
    from tests.conftest import export_bundle

    ckpt = torch.load(trained["retrieval"], weights_only=True)
    ckpt["hyper_parameters"]["cold_score_offset"] = 2.0  # above any cosine gap: cold items first
    shifted = tmp_path / "shifted.ckpt"
    torch.save(ckpt, shifted)
    bundle = export_bundle({**trained, "retrieval": shifted}, tmp_path / "bundle")
    graph = InferenceGraph.from_bundle(bundle, max_top_k=1000)
    assert graph.bundle.manifest["retrieval"] == {"cold_score_offset": 2.0}
    graph.bundle.ranker = None  # the retrieval order
    graph.add_items(["NEW-1"], ["A new release"], ["A new release. Genres: Drama"])
    is_cold = graph.tables.is_cold.numpy().astype(bool)
    checked = 0
    for row in range(0, len(graph.bundle.users), 25):
        user_id = graph.bundle.users["user_id"].iat[row]
        user = torch.from_numpy(graph.bundle.user_embeddings[row])
        seen = graph.bundle.seen.indices[graph.bundle.seen.indptr[row] : graph.bundle.seen.indptr[row + 1]]
        scores = (graph.embeddings @ user).numpy() + 2.0 * is_cold
        scores[:2] = -np.inf
        scores[seen] = -np.inf
        n_cold = int(is_cold[2:][np.isfinite(scores[2:])].sum())  # unseen cold items, the new one included
        top = n_cold + 10  # every cold item, then the best warm ones
        expected = np.argsort(-scores, kind="stable")[:top]
        out = graph.recommend(user_id=user_id, top_k=top)["items"]
        got = graph.to_item_idx([x["item_id"] for x in out])[0]
        # the same list up to the order of near-ties (float sums in another order)
        np.testing.assert_allclose(scores[got], scores[expected], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([x["score"] for x in out], scores[expected], rtol=1e-5, atol=1e-5)
        assert is_cold[got[:n_cold]].all() and not is_cold[got[n_cold:]].any()  # cold items first
        assert "NEW-1" in {x["item_id"] for x in out}
        checked += 1
    assert checked >= 3


def test_evaluate_at_another_offset_moves_cold_targets_up(trained, tmp_path):
    """``recsys.evaluate cold_score_offset=b`` scores one trained model at another offset."""
    from recsys.evaluate import evaluate
    from tests.conftest import compose_config
    from tests.test_train import TINY

    root = trained["root"]
    common = [
        f"paths.root_dir={root}",
        *[o for o in TINY if not o.startswith("~callbacks")],
        f"ckpt_path={trained['retrieval']}",
        "figures=false",
    ]
    base = evaluate(compose_config("evaluate", [*common, f"paths.output_dir={tmp_path}/a"]))
    shifted = evaluate(
        compose_config("evaluate", [*common, f"paths.output_dir={tmp_path}/b", "cold_score_offset=5.0"])
    )
    assert base["cold_score_offset"] == 0.0 and shifted["cold_score_offset"] == 5.0
    assert base["retrieval_cold/n_users"] > 0
    # +5 puts every unseen cold item above every warm one (cosines lie in [-1, 1])
    assert shifted["retrieval_cold/mrr"] > base["retrieval_cold/mrr"]
    assert shifted["retrieval_warm/mrr"] < base["retrieval_warm/mrr"]
    assert shifted["popularity/ndcg@10"] == base["popularity/ndcg@10"]  # the baseline is not the model
    with pytest.raises(ValueError, match="ranker"):
        evaluate(
            compose_config(
                "evaluate",
                [
                    *common,
                    f"paths.output_dir={tmp_path}/c",
                    "cold_score_offset=0.1",
                    f"ranker_ckpt={trained['ranker']}",
                ],
            )
        )


def test_validation_sweep_reads_each_segment_at_each_offset(trained):
    """``sweep_cold_offset.py --split val``: one model validated at several offsets on its run's own
    data; the segments partition the users, and an offset above every cosine leaves no warm item
    in any top 10."""
    from experiments.sweep_cold_offset import validate

    base, shifted = validate(trained["retrieval"], [0.0, 5.0])
    for m in (base, shifted):
        assert m["n_users"] > 0 and m["n_cold"] >= 0
    assert base["val ndcg@10"] > 0 and base["val warm ndcg@10"] > 0
    assert shifted["val warm ndcg@10"] == 0.0 < base["val warm ndcg@10"]
    assert shifted["val ndcg@10"] < base["val ndcg@10"]
