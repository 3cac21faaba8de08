"""The inference graph on a tiny bundle: two-stage path, cold users, seen items, new items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.serving.graph import InferenceGraph, UnknownItemError, UnknownUserError
from tests.conftest import export_bundle


@pytest.fixture(scope="module")
def graph(tiny_bundle) -> InferenceGraph:
    return InferenceGraph.from_bundle(tiny_bundle, max_top_k=100)


def test_known_user_two_stage_never_recommends_seen(graph):
    users = graph.bundle.users
    for row in range(0, len(users), max(1, len(users) // 20)):
        user_id = users["user_id"].iat[row]
        out = graph.recommend(user_id=user_id, top_k=20)
        assert out["strategy"] == "two_stage" and out["user_id"] == user_id
        assert [x["rank"] for x in out["items"]] == list(range(1, 21))
        scores = [x["score"] for x in out["items"]]
        assert scores == sorted(scores, reverse=True)
        seen = graph.bundle.seen.indices[graph.bundle.seen.indptr[row] : graph.bundle.seen.indptr[row + 1]]
        seen_ids = set(graph.item_ids[seen - 2])
        assert not seen_ids & {x["item_id"] for x in out["items"]}


def test_users_who_saw_almost_everything_get_the_rest(graph):
    all_ids = [str(i) for i in graph.item_ids]
    out = graph.recommend(history=all_ids[3:], top_k=10)  # fewer unseen items than candidates
    assert out["strategy"] == "two_stage"
    assert sorted(x["item_id"] for x in out["items"]) == sorted(all_ids[:3])
    assert graph.recommend(history=all_ids, top_k=10)["items"] == []


def test_graph_retrieves_like_the_user_tower_and_serves_the_trained_ranker(graph, trained, monkeypatch):
    """An anonymous history: without the ranker the graph returns the user tower's exact top-K in
    order (the tiny bundle's index is flat); with it, a list drawn from those K, re-scored by the
    ranker exported from the checkpoint (same weights)."""
    from recsys.models.ranker_module import RankerModule

    users = graph.bundle.users
    history = list(users["history"].iat[0])[-10:]
    out = graph.recommend(history=history, top_k=10)
    hist = torch.as_tensor(graph.to_item_idx(history)[0])[None]
    lengths = torch.tensor([hist.shape[1]])
    user = graph.bundle.user_tower(graph.embeddings[hist], lengths)
    scores = (graph.embeddings[2:] @ user[0]).detach().numpy()
    scores[hist[0].numpy() - 2] = -np.inf
    top_k = np.argsort(-scores, kind="stable")[: graph.num_candidates] + 2
    returned = graph.to_item_idx([x["item_id"] for x in out["items"]])[0]
    assert set(returned) <= set(top_k)  # the final list comes from the retrieved K
    with monkeypatch.context() as m:
        m.setattr(graph.bundle, "ranker", None)
        retrieved = graph.recommend(history=history, top_k=10)["items"]
    order = graph.to_item_idx([x["item_id"] for x in retrieved])[0]
    np.testing.assert_array_equal(order, top_k[:10])  # the retrieval order itself
    ranker = RankerModule.load_from_checkpoint(trained["ranker"], map_location="cpu", weights_only=True)
    exported = dict(graph.bundle.ranker.state_dict())
    for key, value in ranker.net.state_dict().items():
        assert torch.equal(exported[key], value)


def test_cold_candidates_keep_their_retrieval_position(graph, monkeypatch):
    """Under ``cold_candidates=keep`` the ranker re-orders warm candidates only: a cold item is
    served where retrieval put it, and the warm ones around it in ranker-score order."""
    monkeypatch.setattr(graph.bundle.ranker, "cold_candidates", "keep")
    checked = 0
    for user_id in graph.bundle.users["user_id"]:
        out = graph.recommend(user_id=user_id, top_k=50)["items"]
        ranked = [x["item_id"] for x in out]
        with monkeypatch.context() as m:
            m.setattr(graph.bundle, "ranker", None)  # the retrieval order alone
            retrieved = [x["item_id"] for x in graph.recommend(user_id=user_id, top_k=50)["items"]]
        cold = [i for i, item in enumerate(retrieved) if not graph.item(item)["is_warm"]]
        for pos in cold:
            assert ranked[pos] == retrieved[pos]
        assert set(ranked) == set(retrieved)
        warm_scores = [x["score"] for x in out if graph.item(x["item_id"])["is_warm"]]
        assert warm_scores == sorted(warm_scores, reverse=True)
        checked += len(cold)
        if checked >= 5:
            break
    assert checked >= 5, "too few cold items in the tiny bundle's lists to check"


@pytest.mark.parametrize("n_known", [0, 1, 2])
def test_cold_users_get_popular_by_category(graph, n_known):
    popular_ids = list(graph.item_ids[graph.by_popularity[:5] - 2])
    given = popular_ids[:n_known]
    out = graph.recommend(history=[*given, "no-such-item"], top_k=5)
    assert out["strategy"] == "popular"
    assert out["unknown_items"] == ["no-such-item"]
    returned = [x["item_id"] for x in out["items"]]
    assert len(returned) == 5 and not set(given) & set(returned)
    if n_known == 0:
        assert returned == popular_ids  # global popularity
    else:
        cats = {c for i in given for c in graph.item(i)["categories"]}
        assert all(set(graph.item(i)["categories"]) & cats for i in returned[:2])


def test_history_cap_uses_most_recent_items(graph, monkeypatch):
    users = graph.bundle.users
    long = [i for h in users["history"].head(10) for i in h]
    assert len(long) > graph.max_history
    seen_by_tower = []
    encode_one = graph.bundle.user_tower.encode_one

    def recording(vectors):
        seen_by_tower.append(vectors.clone())
        return encode_one(vectors)

    monkeypatch.setattr(graph.bundle.user_tower, "encode_one", recording)
    out = graph.recommend(history=long, top_k=10)
    expected = graph.embeddings[torch.as_tensor(graph.to_item_idx(long[-graph.max_history :])[0])]
    assert seen_by_tower[0].shape[0] == graph.max_history
    assert torch.equal(seen_by_tower[0], expected)
    # every given item is excluded, not only the most recent ones
    assert not set(long) & {x["item_id"] for x in out["items"]}


def test_errors_and_lookups(graph):
    with pytest.raises(UnknownUserError):
        graph.recommend(user_id="nobody")
    with pytest.raises(UnknownItemError):
        graph.item("nothing")
    with pytest.raises(ValueError, match="top_k"):
        graph.recommend(history=[], top_k=0)
    user_id = graph.bundle.users["user_id"].iat[0]
    hist = graph.history(user_id, limit=3)
    assert [x["item_id"] for x in hist["items"]] == list(graph.bundle.users["history"].iat[0])[-3:]
    assert all(x["timestamp"] is None or x["timestamp"] > 0 for x in hist["items"])


def test_new_item_from_text_is_retrievable(graph):
    """A new item embedded through the cold path is searchable at once: a query at its own vector
    retrieves it first, and a history that holds it no longer gets it (seen)."""
    users = graph.bundle.users
    history = list(users["history"].iat[1])
    before = graph.recommend(history=history, top_k=100)
    new = graph.add_items(["NEW-1"], ["A brand new film"], ["A brand new film. Genres: Drama"])
    assert graph.item("NEW-1")["title"] == "A brand new film" and not graph.item("NEW-1")["is_warm"]
    assert int(new[0]) in graph.bundle.index
    vec = graph.bundle.index.reconstruct(int(new[0]))
    np.testing.assert_allclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    _, ids = graph.bundle.index.search(vec[None].astype(np.float32), 1)
    assert ids[0, 0] == int(new[0])  # retrieved by the index, first
    after = graph.recommend(history=[*history, "NEW-1"], top_k=100)
    assert "NEW-1" not in {x["item_id"] for x in after["items"]}  # seen now
    assert len(before["items"]) == len(after["items"]) == 100


def test_cached_user_vectors_equal_the_user_tower(graph):
    """Known users' vectors are computed at export; they must be what the tower gives now."""
    for row in (0, 7, len(graph.bundle.users) - 1):
        user_id = graph.bundle.users["user_id"].iat[row]
        hist = torch.as_tensor(graph.user_history_idx(user_id))[None]
        with torch.no_grad():
            fresh = graph.bundle.user_tower(graph.embeddings[hist], torch.tensor([hist.shape[1]]))
        np.testing.assert_allclose(graph.bundle.user_embeddings[row], fresh[0].numpy(), atol=1e-5)


def test_showcase_prints_titles_and_recommendations(tiny_bundle):
    from rich.console import Console

    from recsys.serving.showcase import showcase

    console = Console(record=True, width=200)
    shown = showcase(str(tiny_bundle), n_users=3, console=console)
    text = console.export_text()
    assert len(shown) == 3 and "make serve" in text
    for user in shown:
        assert len(user["recommendations"]["items"]) == 10 and len(user["history"]) == 5
        assert user["recommendations"]["items"][0]["title"] in text


def test_new_item_reaches_the_user_its_text_fits(tiny_bundle, trained):
    """Hand-built cold start: a new item whose text is that of a catalog item C the model never
    trained on (C's ID row is the cold row, so only its text speaks) must be recommended where C
    is: same retrieval score, same ranker features, so next to C in the same user's list."""
    from recsys.data.dataset import PreparedDataset

    ckpt = torch.load(trained["retrieval"], weights_only=True)
    items = PreparedDataset.load(ckpt["hyper_parameters"]["dataset_dir"]).items.set_index("item_id")
    graph = InferenceGraph.from_bundle(tiny_bundle, max_top_k=100)
    cold = set(items.index[~items["is_warm"]].astype(str))
    found = None
    for user_id in graph.bundle.users["user_id"]:
        ranked = [x["item_id"] for x in graph.recommend(user_id=user_id, top_k=100)["items"]]
        hits = [i for i in ranked if i in cold]
        if hits:
            found = (user_id, hits[0], ranked.index(hits[0]))
            break
    assert found is not None, "no user of the tiny bundle has a cold item among its top 100"
    user_id, twin, rank = found
    graph.add_items(["NEW-TWIN"], ["A new release"], [items.loc[twin, "text"]])
    new_idx = int(graph.to_item_idx(["NEW-TWIN"])[0][0])
    twin_idx = int(graph.to_item_idx([twin])[0][0])
    torch.testing.assert_close(graph.embeddings[new_idx], graph.embeddings[twin_idx], atol=1e-5, rtol=0)
    after = [x["item_id"] for x in graph.recommend(user_id=user_id, top_k=100)["items"]]
    # identical vectors and features but the retrieval slot (the ranker's `rank` feature): the two
    # stay within a slot or two of each other
    assert "NEW-TWIN" in after and 1 <= abs(after.index("NEW-TWIN") - after.index(twin)) <= 2
    assert after.index("NEW-TWIN") <= rank + 2


def test_category_codes_only_for_a_ranker_that_reads_them_and_then_as_in_training(graph, trained):
    """The default ranker reads no category cross: the graph skips them. A ranker that does gets
    the codes its training lists were built with (same vocabulary, same crosses per candidate)."""
    import copy

    from recsys.data.dataset import PreparedDataset
    from recsys.features.category_features import category_crosses, category_popularity_crosses
    from recsys.features.ranker_features import ItemFeatureTables
    from recsys.models.two_tower_module import TwoTowerModule

    assert graph.tables.categories.vocabulary == ()
    bundle = copy.copy(graph.bundle)
    bundle.manifest = copy.deepcopy(graph.bundle.manifest)
    bundle.manifest["ranker"]["features"] = [*bundle.manifest["ranker"]["features"], "category_share"]
    reading = InferenceGraph(bundle)
    model = TwoTowerModule.load_from_checkpoint(trained["retrieval"], weights_only=True)
    training = ItemFeatureTables.from_dataset(PreparedDataset.load(model.hparams.dataset_dir))
    assert reading.tables.categories.vocabulary == training.categories.vocabulary != ()
    history, lengths = torch.tensor([[5, 9, 14, 3]]), torch.tensor([4])
    candidates = torch.arange(2, 40)[None]
    served = category_crosses(reading.tables.categories, candidates, history, lengths)
    trained_lists = category_crosses(training.categories, candidates, history, lengths)
    for a, b in zip(served, trained_lists, strict=True):
        torch.testing.assert_close(a, b)
    assert served[0].abs().sum() > 0  # the crosses are not all zero on this history

    # a ranker reading only the category-popularity crosses gets the codes too, and the served
    # training counts and category sizes are its training lists'
    default_features = graph.bundle.manifest["ranker"]["features"]
    bundle.manifest["ranker"]["features"] = [*default_features, "category_popularity"]
    reading = InferenceGraph(bundle)
    assert reading.tables.categories.vocabulary == training.categories.vocabulary
    torch.testing.assert_close(reading.tables.category_totals, training.category_totals)
    served, trained_lists = (
        category_popularity_crosses(
            t.categories, t.train_count, t.category_totals, candidates, history, lengths
        )
        for t in (reading.tables, training)
    )
    for a, b in zip(served, trained_lists, strict=True):
        torch.testing.assert_close(a, b)
    assert (served[0] > np.log(1e-6) + 1e-3).any()  # some candidate in a favoured category


def test_item_age_served_as_of_the_end_of_the_data(graph, trained):
    """The bundle carries each item's age at the end of the data (the ranker's item_age input, as
    its training lists computed it at each request); an item added later has none."""
    from recsys.data.dataset import PreparedDataset
    from recsys.features.ranker_features import InteractionTimeline
    from recsys.models.two_tower_module import TwoTowerModule

    model = TwoTowerModule.load_from_checkpoint(trained["retrieval"], weights_only=True)
    timeline = InteractionTimeline.from_dataset(PreparedDataset.load(model.hparams.dataset_dir))
    expected = timeline.age_days(graph.item_idx, timeline.end)
    np.testing.assert_array_equal(graph.age_days[graph.item_idx], expected)
    assert (expected > 0).any() and (expected < 0).any()  # aged items and never-interacted ones


def test_known_users_candidates_from_the_export_are_the_search_a_request_runs(
    tiny_bundle, trained, tmp_path, monkeypatch
):
    """The bundle's known-user candidates are what the index search gives, and their stored ranker
    logits what the ranker computes of them: a bundle exported with and one without them give
    every known user the same answer, scores included (the tiny bundle's index is flat: exact),
    also after an item is added (scored, merged in, the list ranked live) and after a cached
    candidate is deleted (searched and ranked again). While the catalog is as exported, a known
    user's request computes no ranker feature."""
    cached = InferenceGraph.from_bundle(tiny_bundle, max_top_k=100)
    without = export_bundle(trained, tmp_path / "bundle", overrides=("known_candidates=false",))
    searched = InferenceGraph.from_bundle(without, max_top_k=100)
    known = cached.bundle.candidates
    assert (
        known is not None
        and known.k == cached.num_candidates == cached.bundle.manifest["known_candidates"]["k"]
    )
    assert known.items.shape == (len(cached.bundle.users), known.k)
    assert searched.bundle.candidates is None and searched.bundle.manifest["known_candidates"] is None
    assert not list(without.glob("user_candidate*"))
    assert known.logits is not None and known.logits.shape == known.items.shape
    padding = known.items == 0
    assert np.isnan(known.logits[padding]).all() and not np.isnan(known.logits[~padding]).any()
    users = list(cached.bundle.users["user_id"].astype(str))

    def answers(graph: InferenceGraph, top_k: int = known.k) -> list[dict]:  # the cache serves K at most
        return [graph.recommend(user_id=u, top_k=top_k) for u in users]

    with monkeypatch.context() as m:  # the exported logits stand in for the ranker's work
        m.setattr(cached, "_ranker_logits", lambda *a: pytest.fail("ranked a list the export ranked"))
        assert answers(cached) == answers(searched)
    assert known.k < 100 and answers(cached, 100) == answers(searched, 100)  # more than K: searched
    # a new item placed at user 0's own vector: first among its candidates
    vector = cached.bundle.user_embeddings[0][None]
    for graph in (cached, searched):
        graph.insert_items(["NEW-AT-USER-0"], ["new"], [[]], vector, graph.tables.text[2:3].numpy())
    after = answers(cached)
    assert after == answers(searched)
    assert "NEW-AT-USER-0" in {x["item_id"] for x in after[0]["items"]}
    deleted = next(x["item_id"] for x in after[0]["items"] if x["item_id"] != "NEW-AT-USER-0")
    assert sum(deleted in {x["item_id"] for x in a["items"]} for a in after) > 1  # in several lists
    for graph in (cached, searched):
        graph.remove_items([deleted])
    final = answers(cached)
    assert final == answers(searched)
    assert all(deleted not in {x["item_id"] for x in a["items"]} for a in final)
