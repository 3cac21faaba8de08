import numpy as np
import pytest

from recsys.index.faiss_index import FlatIndex, HNSWIndex, IndexInputError, ItemIndex, IVFIndex

DIM = 16


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries, ids, vectors, k, exclude=None):
    scores = queries @ vectors.T
    out = []
    for q in range(len(queries)):
        order = [
            i for i in np.argsort(-scores[q], kind="stable") if exclude is None or ids[i] not in exclude[q]
        ]
        out.append(ids[order[:k]])
    return np.array(out)


BACKENDS = {
    "flat": lambda: FlatIndex(DIM),
    "hnsw": lambda: HNSWIndex(DIM, m=16, ef_construction=200, ef_search=400, storage="flat"),
    "ivf": lambda: IVFIndex(DIM, nlist=4, nprobe=4, seed=0),  # nprobe = nlist: exhaustive, exact
}


@pytest.mark.parametrize("kind", BACKENDS)
def test_search_add_remove_round_trip(kind, tmp_path):
    vectors = unit_vectors(300)
    ids = np.arange(1000, 1300, dtype=np.int64)
    index = BACKENDS[kind]().build(ids, vectors)
    queries = unit_vectors(5, seed=1)
    _, found = index.search(queries, 10)
    np.testing.assert_array_equal(found, brute_force(queries, ids, vectors, 10))

    # remove the current best hit of query 0: it must vanish from every result
    gone = int(found[0, 0])
    assert index.remove(np.array([gone, 99999])) == 1
    assert gone not in index and len(index) == 299
    _, found = index.search(queries, 10)
    assert gone not in found
    keep = ids != gone
    np.testing.assert_array_equal(found, brute_force(queries, ids[keep], vectors[keep], 10))

    # add a new item equal to query 0: it is query 0's top hit with score 1
    index.add(np.array([5000]), queries[:1])
    scores, found = index.search(queries[:1], 3)
    assert found[0, 0] == 5000 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(index.reconstruct(5000), queries[0], atol=1e-6)

    # re-adding a removed id works; adding a live id is refused
    index.add(np.array([gone]), vectors[ids == gone])
    assert gone in index and len(index) == 301
    with pytest.raises(IndexInputError, match="already in the index"):
        index.add(np.array([5000]), queries[:1])

    # save -> load keeps ids, tombstones and results
    index.remove(np.array([1001]))
    index.save(tmp_path / "items.faiss")
    loaded = ItemIndex.load(tmp_path / "items.faiss")
    assert type(loaded) is type(index) and len(loaded) == len(index) == 300
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    assert 1001 not in loaded.search(queries, 300)[1]


@pytest.mark.parametrize("kind", BACKENDS)
def test_search_excludes_per_query_ids(kind):
    vectors = unit_vectors(200)
    ids = np.arange(2, 202, dtype=np.int64)
    index = BACKENDS[kind]().build(ids, vectors)
    queries = unit_vectors(3, seed=2)
    exclude = [np.array(brute_force(queries, ids, vectors, 5)[0]), np.array([], dtype=np.int64), ids[:150]]
    expected = brute_force(queries, ids, vectors, 8, exclude=[set(e) for e in exclude])
    _, found = index.search(queries, 8, exclude=exclude)  # a batch: over-fetched and filtered
    np.testing.assert_array_equal(found, expected)
    index.remove(ids[-1:])  # a removed id (hnsw/ivf: a tombstone) next to a query's own exclusions
    expected = brute_force(queries, ids, vectors, 8, exclude=[set(e) | {ids[-1]} for e in exclude])
    for q in range(3):  # one query: filtered inside the search
        _, single = index.search(queries[q : q + 1], 8, exclude=[exclude[q]])
        np.testing.assert_array_equal(single[0], expected[q])


def test_more_k_than_items_pads_with_minus_one():
    index = FlatIndex(DIM).build(np.array([7, 8]), unit_vectors(2))
    scores, found = index.search(unit_vectors(1), 4)
    assert sorted(found[0, :2]) == [7, 8] and list(found[0, 2:]) == [-1, -1]
    assert np.isneginf(scores[0, 2:]).all()


def test_bad_input_is_refused():
    index = FlatIndex(DIM)
    with pytest.raises(IndexInputError, match=r"shape \[n, 16\]"):
        index.build(np.arange(3), np.zeros((3, 8), np.float32))
    with pytest.raises(IndexInputError, match="unique"):
        index.build(np.array([1, 1]), unit_vectors(2))
    with pytest.raises(IndexInputError, match="needs at least"):
        IVFIndex(DIM, nlist=50, nprobe=16, seed=0).build(np.arange(10), unit_vectors(10))


@pytest.mark.parametrize(("storage", "min_recall"), [("fp16", 0.99), ("sq8", 0.9)])
def test_hnsw_quantized_storage_keeps_recall_and_round_trips(storage, min_recall, tmp_path):
    vectors = unit_vectors(2000)
    ids = np.arange(2000, dtype=np.int64) + 7
    queries = unit_vectors(50, seed=3)
    index = HNSWIndex(DIM, m=16, ef_construction=200, ef_search=200, storage=storage).build(ids, vectors)
    scores, found = index.search(queries, 10)
    exact = brute_force(queries, ids, vectors, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= min_recall
    # scores are (approximately) the true inner products of the returned items
    true = np.einsum("qd,qkd->qk", queries, vectors[found - 7])
    np.testing.assert_allclose(scores, true, atol=0.02 if storage == "sq8" else 1e-3)
    index.save(tmp_path / "items.faiss")
    loaded = ItemIndex.load(tmp_path / "items.faiss")
    assert loaded.storage == storage
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], found)
    with pytest.raises(ValueError, match="storage"):
        HNSWIndex(DIM, m=16, ef_construction=200, ef_search=200, storage="pq")


def test_sized_index_is_exact_up_to_its_threshold_and_the_large_index_above():
    import functools

    from recsys.index.sized_index import SizedIndex

    large = functools.partial(HNSWIndex, m=16, ef_construction=100, ef_search=64, storage="flat")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, DIM)).astype(np.float32)
    ids = np.arange(2, 52)
    small = SizedIndex(DIM, flat_max_items=50, large=large).build(ids, vectors)
    big = SizedIndex(DIM, flat_max_items=49, large=large).build(ids, vectors)
    assert small.kind == "flat" and big.kind == "hnsw" and len(small) == len(big) == 50
    query = vectors[:1]
    exact = np.argsort(-(vectors @ query[0]), kind="stable")[:5] + 2
    np.testing.assert_array_equal(small.search(query, 5)[1][0], exact)


def test_export_defaults_to_the_sized_index():
    from tests.conftest import compose_config

    cfg = compose_config("export", ["retrieval_ckpt=x"])
    assert cfg.index._target_ == "recsys.index.sized_index.SizedIndex" and cfg.index.flat_max_items == 50_000
    assert cfg.index.large._target_ == "recsys.index.faiss_index.HNSWIndex" and cfg.index.large._partial_
