"""Full-catalog evaluation against brute force numpy (and torchmetrics as an oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from recsys.data.seen_items import SeenItems
from recsys.evaluation.metrics import FullCatalogRetrievalMetrics
from recsys.evaluation.retrieval import rank_full_catalog

N_ITEMS, N_USERS, K = 40, 12, [1, 5, 10]


@pytest.fixture()
def case():
    rng = np.random.default_rng(3)
    user = rng.normal(size=(N_USERS, 6)).astype(np.float32)
    items = rng.normal(size=(N_ITEMS + 2, 6)).astype(np.float32)
    targets = rng.integers(2, N_ITEMS + 2, N_USERS)
    seen_u, seen_i = [], []
    for u in range(N_USERS):
        s = rng.choice(
            np.setdiff1d(np.arange(2, N_ITEMS + 2), [targets[u]]), size=rng.integers(0, 8), replace=False
        )
        seen_u += [u] * len(s)
        seen_i += list(s)
    return user, items, targets, SeenItems.from_pairs(np.array(seen_u, int), np.array(seen_i, int), N_USERS)


def brute_force(user, items, targets, seen):
    ranks, tops = [], []
    for u in range(N_USERS):
        scores = items[2:] @ user[u]
        ids = np.arange(2, N_ITEMS + 2)
        excluded = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        valid = np.array([i not in excluded for i in ids])
        t_score = items[targets[u]] @ user[u]
        others = valid & (ids != targets[u])
        ranks.append(int((scores[others] >= t_score).sum()))
        order = np.argsort(-scores[valid], kind="stable")
        tops.append(ids[valid][order])
    return np.array(ranks), tops


@pytest.mark.parametrize("chunk", [7, 64])
def test_ranks_and_topk_match_bruteforce(case, chunk):
    user, items, targets, seen = case
    rows, seen_items = seen.batch(np.arange(N_USERS))
    u, it = torch.from_numpy(user), torch.from_numpy(items)
    res = rank_full_catalog(
        lambda idx: u @ it[idx].T,
        torch.from_numpy(targets),
        N_ITEMS,
        rows,
        seen_items,
        k_max=10,
        chunk_size=chunk,
    )
    ranks, tops = brute_force(user, items, targets, seen)
    assert res.ranks.tolist() == ranks.tolist()
    for u_ in range(N_USERS):
        assert res.topk[u_].tolist() == tops[u_][:10].tolist()
        excluded = set(seen.indices[seen.indptr[u_] : seen.indptr[u_ + 1]].tolist())
        assert not excluded & set(res.topk[u_].tolist())  # seen items never recommended
    ranks_only = rank_full_catalog(
        lambda idx: u @ it[idx].T, torch.from_numpy(targets), N_ITEMS, rows, seen_items, 0, chunk
    )
    assert ranks_only.ranks.tolist() == ranks.tolist() and ranks_only.topk.shape == (N_USERS, 0)


def test_metric_values_match_formulas_and_torchmetrics(case):
    user, items, targets, seen = case
    rows, seen_items = seen.batch(np.arange(N_USERS))
    u, it = torch.from_numpy(user), torch.from_numpy(items)
    res = rank_full_catalog(
        lambda idx: u @ it[idx].T, torch.from_numpy(targets), N_ITEMS, rows, seen_items, 10
    )
    is_warm = np.zeros(N_ITEMS + 2, bool)
    is_warm[2:20] = True
    counts = np.arange(N_ITEMS + 2)
    text = items / np.linalg.norm(items, axis=1, keepdims=True)
    metric = FullCatalogRetrievalMetrics(K, N_ITEMS, is_warm, counts, text)
    metric.update(res.ranks[:5], torch.from_numpy(targets[:5]), res.topk[:5])  # two batches accumulate
    metric.update(res.ranks[5:], torch.from_numpy(targets[5:]), res.topk[5:])
    out = metric.compute()
    ranks, tops = brute_force(user, items, targets, seen)
    for k in K:
        assert out["all"][f"recall@{k}"] == pytest.approx(np.mean(ranks < k))
        assert out["all"][f"ndcg@{k}"] == pytest.approx(np.mean((ranks < k) / np.log2(ranks + 2)))
        cold = ~is_warm[targets]
        assert out["cold"][f"recall@{k}"] == pytest.approx(np.mean(ranks[cold] < k))
        assert out["all"][f"coverage@{k}"] == pytest.approx(
            len(set(np.concatenate([t[:k] for t in tops]))) / N_ITEMS
        )
        sims = [text[t[:k]] @ text[t[:k]].T for t in tops]
        if k == 1:  # no pairs: undefined, so not reported
            assert f"diversity@{k}" not in out["all"]
        else:
            div = np.mean([1 - (s.sum() - np.trace(s)) / (k * (k - 1)) for s in sims])
            assert out["all"][f"diversity@{k}"] == pytest.approx(div, abs=1e-5)
        p = (counts + 1) / (counts[2:].sum() + N_ITEMS)
        assert out["all"][f"novelty@{k}"] == pytest.approx(
            np.mean([-np.log2(p[t[:k]]).mean() for t in tops]), rel=1e-5
        )
    assert out["all"]["mrr"] == pytest.approx(np.mean(1 / (ranks + 1)))

    # torchmetrics as an oracle on the same case: score every non-excluded item per user
    preds, target, indexes = [], [], []
    for q in range(N_USERS):
        excluded = set(seen.indices[seen.indptr[q] : seen.indptr[q + 1]].tolist())
        ids = [i for i in range(2, N_ITEMS + 2) if i not in excluded]
        s = items[ids] @ user[q]
        preds += list(s - s.min() + 1.0)  # torchmetrics ignores scores <= 0; shift keeps the order
        target += [i == targets[q] for i in ids]
        indexes += [q] * len(ids)
    preds_t, target_t, idx_t = torch.tensor(preds), torch.tensor(target), torch.tensor(indexes)
    assert out["all"]["ndcg@10"] == pytest.approx(
        RetrievalNormalizedDCG(top_k=10)(preds_t, target_t, idx_t).item(), abs=1e-5
    )
    assert out["all"]["recall@5"] == pytest.approx(
        RetrievalRecall(top_k=5)(preds_t, target_t, idx_t).item(), abs=1e-6
    )
    assert out["all"]["mrr"] == pytest.approx(RetrievalMRR()(preds_t, target_t, idx_t).item(), abs=1e-6)


def test_ties_are_pessimistic():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.5]])
    res = rank_full_catalog(
        lambda idx: scores[:, idx - 2], torch.tensor([3]), 4, np.zeros(0, int), np.zeros(0, int), 2
    )
    assert res.ranks.tolist() == [2]  # both other 1.0-scored items rank above the target


def test_shared_row_scores_are_masked_per_user(case):
    """A popularity scorer returns one row expanded over users; masking must stay per user."""
    _, _, targets, seen = case
    rng = np.random.default_rng(5)
    pop = torch.from_numpy(rng.permutation(N_ITEMS + 2).astype(np.float32))
    rows, seen_items = seen.batch(np.arange(N_USERS))
    res = rank_full_catalog(
        lambda idx: pop[idx][None, :].expand(N_USERS, -1),
        torch.from_numpy(targets),
        N_ITEMS,
        rows,
        seen_items,
        k_max=5,
        chunk_size=16,
    )
    for u in range(N_USERS):
        excluded = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        ids = [i for i in range(2, N_ITEMS + 2) if i not in excluded and i != targets[u]]
        assert res.ranks[u].item() == sum(pop[i] >= pop[targets[u]] for i in ids)
        expected_top = sorted((i for i in range(2, N_ITEMS + 2) if i not in excluded), key=lambda i: -pop[i])[
            :5
        ]
        assert res.topk[u].tolist() == expected_top


def test_static_scores_rank_like_the_full_catalog_pass():
    from recsys.evaluation.retrieval import rank_static_scores

    gen = torch.Generator().manual_seed(3)
    n, batch, k = 500, 32, 20
    scores = torch.randint(0, 40, (n + 2,), generator=gen).float()  # many ties, like popularity
    targets = torch.randint(2, n + 2, (batch,), generator=gen)
    rows = torch.randint(0, batch, (300,), generator=gen).numpy()
    items = torch.randint(2, n + 2, (300,), generator=gen).numpy()
    items[:5], rows[:5] = targets[:5].numpy(), np.arange(5)  # targets seen before (re-watches)
    full = rank_full_catalog(lambda i: scores[i][None, :].expand(batch, -1), targets, n, rows, items, k, 64)
    fast = rank_static_scores(scores, targets, rows, items, k)
    assert torch.equal(fast.ranks, full.ranks)
    # same top-K scores row by row (which of several tied items is listed may differ)
    assert torch.equal(scores[fast.topk], scores[full.topk])
    seen = set(zip(rows.tolist(), items.tolist(), strict=True))
    assert not any((r, int(i)) in seen for r in range(batch) for i in fast.topk[r])


def test_text_content_scores_hand_computed():
    from recsys.evaluation.baselines import text_content_scores

    text = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # rows 0/1: pad/cold
    history = torch.tensor([[2, 3], [4, 0]])
    lengths = torch.tensor([2, 1])
    scores = text_content_scores(history, lengths, text)(torch.tensor([2, 3, 4]))
    r = 0.5**0.5  # user 0's profile is mean((1, 0), (0, 1)) normalized = (r, r); user 1's is (r, r)
    torch.testing.assert_close(scores, torch.tensor([[r, r, 1.0], [r, r, 1.0]]))
    scores = text_content_scores(torch.tensor([[3, 4]]), torch.tensor([1]), text)(torch.tensor([2, 3]))
    torch.testing.assert_close(scores, torch.tensor([[0.0, 1.0]]))  # padding beyond the length is ignored


def test_a_repeated_target_is_a_miss_and_list_slots_past_the_unseen_items_are_padding():
    from recsys.evaluation.retrieval import rank_static_scores

    scores = torch.tensor([0.0, 0.0, 0.9, 0.8, 0.7, 0.1])  # by item_idx; catalog = items 2..5
    seen_rows, seen_items = np.array([0, 0]), np.array([3, 4])  # the user had items 3 and 4 ...
    target = torch.tensor([3])  # ... and consumed 3 again (deduplicate=false)
    full = rank_full_catalog(lambda idx: scores[idx][None, :], target, 4, seen_rows, seen_items, 4)
    static = rank_static_scores(scores, target, seen_rows, seen_items, 4)
    for result in (full, static):
        assert result.ranks.tolist() == [4]  # n_catalog: a miss at every k, as serving never shows it
        assert result.topk.tolist() == [[2, 5, 0, 0]]  # two unseen items, then padding


def test_list_metrics_skip_padding_and_items_without_text():
    text = np.zeros((6, 2), np.float32)  # item_idx rows; item 5 has no text
    text[2], text[3], text[4] = [1, 0], [0.6, 0.8], [0, 1]
    counts = np.array([0, 0, 5, 3, 1, 0])
    metric = FullCatalogRetrievalMetrics([4], 4, np.ones(6, bool), counts, text)
    topk = torch.tensor([[2, 3, 5, 0], [4, 0, 0, 0]])
    metric.update(torch.tensor([0, 9]), torch.tensor([2, 4]), topk)
    out = metric.compute()["all"]
    assert out["coverage@4"] == pytest.approx(4 / 4)  # items 2, 3, 4, 5; padding 0 is not an item
    self_info = -np.log2((counts + 1) / (counts[2:].sum() + 4))
    novelty = np.mean([self_info[[2, 3, 5]].mean(), self_info[4]])  # real items only
    assert out["novelty@4"] == pytest.approx(novelty, rel=1e-6)
    assert out["diversity@4"] == pytest.approx(1 - 0.6)  # user 1: items 2, 3 (5 has no text); user 2: none


def test_two_stage_mrr_is_cut_at_k_and_named_so():
    metric = FullCatalogRetrievalMetrics([10], 300, np.ones(302, bool), list_metrics=False, mrr_cutoff=200)
    metric.update(torch.tensor([0, 5, 300]), torch.tensor([2, 3, 4]))
    out = metric.compute()["all"]
    assert "mrr" not in out and out["mrr@200"] == pytest.approx((1 + 1 / 6 + 0) / 3)


def test_ranking_map_matches_brute_force_with_negative_scores():
    """ranking/map@k on raw ranker logits (mostly negative) equals average precision by hand."""
    import torch

    from recsys.evaluation.ranking import CandidateListMetrics

    logits = torch.tensor([[-0.5, -3.0, -1.0, -2.0], [-4.0, -0.1, -0.2, -9.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    metrics = CandidateListMetrics([3])
    metrics.update_lists(logits, labels, mask, torch.tensor([0, 1]))
    values = metrics.compute()
    # AP@k: the mean precision at the ranks of the relevant items within the top k.
    # list 0 by score: items 0, 2, 3 -> relevant at ranks 1 and 2 -> (1/1 + 2/2) / 2 = 1
    # list 1 by score: items 1, 2, 0 -> relevant at rank 2 -> 1/2
    assert values["map@3"].item() == pytest.approx((1.0 + 0.5) / 2)
    assert values["hitrate@3"].item() == pytest.approx(1.0)


def test_cold_first_random_is_k_over_the_cold_items():
    from recsys.evaluation.baselines import cold_first_random

    # two padding rows, then items 2..8: 2, 5 and 8 warm -> 4 cold items
    is_warm = np.array([False, False, True, False, False, True, False, False, True])
    assert cold_first_random([1, 2, 10], is_warm) == {
        "cold_first_random/n_cold_items": 4.0,
        "cold_first_random/recall@1": 0.25,
        "cold_first_random/recall@2": 0.5,
        "cold_first_random/recall@10": 1.0,
    }
    assert cold_first_random([10], np.array([False, False, True, True])) == {}  # nothing cold
