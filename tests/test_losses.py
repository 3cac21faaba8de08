"""The loss against hand-computed 4×4 cases (values worked out with exp/log on paper).

Users are the identity, so logits[i, j] = positive[j, i]: the in-batch logit matrix is L below.
Row i's loss is log Σ_j exp(L_ij − c_j) − (L_ii − c_i) over the unmasked columns j.
"""

from __future__ import annotations

import math

import pytest
import torch

from recsys.models.catalog_cross_entropy import block_rows, catalog_cross_entropy, masked_positions
from recsys.models.losses import (
    all_positions_loss,
    earlier_items,
    exact_softmax_loss,
    mask_accidental_hits,
    mask_seen_items,
    sampled_softmax_loss,
)

L = torch.tensor([[2.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 3, 1], [0, 0, 0, 0]])
USERS = torch.eye(4)
POSITIVES = L.T.clone()  # column j of the logit matrix is item j's vector


def _loss(ids, **kw):
    return sampled_softmax_loss(USERS, POSITIVES, torch.tensor(ids), temperature=1.0, **kw).item()


def test_plain_infonce():
    # rows: ln(e²+1+e+1)−2, ln(1+e+1+1)−1, ln(e+1+e³+e)−3, ln 4 ; mean:
    assert _loss([10, 11, 12, 13]) == pytest.approx(0.725438, abs=1e-5)


def test_accidental_hits_are_masked():
    # rows 0 and 2 share item 10: column 2 is not a negative for row 0, column 0 not for row 2
    assert _loss([10, 11, 10, 13]) == pytest.approx(0.634838, abs=1e-5)
    assert _loss([10, 11, 10, 13], mask_hits=False) == pytest.approx(0.725438, abs=1e-5)


def test_logq_subtracts_log_expected_count():
    # column 0 has log expected count 1: every logit in column 0 (the positive of row 0 too) drops by 1
    log_q = torch.tensor([1.0, 0, 0, 0])
    assert _loss([10, 11, 12, 13], positive_log_q=log_q) == pytest.approx(0.764553, abs=1e-5)
    assert _loss([10, 11, 10, 13], positive_log_q=log_q) == pytest.approx(0.640524, abs=1e-5)


def test_logq_sign_penalizes_popular_items():
    # a more frequently sampled positive gets a lower corrected logit, so a higher loss
    base = _loss([10, 11, 12, 13])
    # a constant shift of every column changes nothing (softmax is shift-invariant)
    assert _loss([10, 11, 12, 13], positive_log_q=torch.full((4,), 2.0)) == pytest.approx(base, abs=1e-6)
    row0_up = _loss([10, 11, 12, 13], positive_log_q=torch.tensor([1.0, 0, 0, 0]))
    assert row0_up > base


def test_temperature_scales_logits():
    loss = sampled_softmax_loss(
        USERS, POSITIVES * 0.5, torch.tensor([10, 11, 12, 13]), temperature=0.5
    ).item()
    assert loss == pytest.approx(0.725438, abs=1e-5)


def test_global_negatives_with_accidental_hit():
    # two global negatives: item 11 (row 1's positive, masked for row 1 only) and item 99
    neg = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    loss = sampled_softmax_loss(
        USERS,
        POSITIVES,
        torch.tensor([10, 11, 12, 13]),
        1.0,
        negatives=neg,
        negative_ids=torch.tensor([11, 99]),
    ).item()
    e = math.exp
    rows = [
        math.log(e(2) + 1 + e(1) + 1 + e(1) + e(0)) - 2,  # row 0 sees negative logits 1 and 0
        math.log(1 + e(1) + 1 + 1 + e(0)) - 1,  # row 1: item-11 column masked, item 99 -> 0
        math.log(e(1) + 1 + e(3) + e(1) + e(0) + e(0)) - 3,
        math.log(4 + e(0) + e(1)),  # row 3: negatives give 0 and 1
    ]
    assert loss == pytest.approx(sum(rows) / 4, abs=1e-5)


def test_mask_keeps_own_positive_column():
    logits = torch.zeros(2, 4)
    masked = mask_accidental_hits(logits, torch.tensor([5, 5]), torch.tensor([5, 5, 5, 7]))
    assert torch.isinf(masked).tolist() == [[False, True, True, False], [True, False, True, False]]


def test_full_catalog_negatives_without_in_batch_is_exact_softmax():
    torch.manual_seed(0)
    user = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    catalog = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    targets = torch.tensor([0, 3, 3, 7, 11])
    loss = sampled_softmax_loss(
        user,
        catalog[targets],
        targets,
        0.1,
        negatives=catalog,
        negative_ids=torch.arange(12),
        in_batch_negatives=False,
    )
    exact = torch.nn.functional.cross_entropy(user @ catalog.T / 0.1, targets)
    assert loss.item() == pytest.approx(exact.item(), abs=1e-5)


@pytest.mark.parametrize("ids", [[10, 11, 12, 13], [10, 11, 10, 13]])
@pytest.mark.parametrize("in_batch_negatives", [True, False])
def test_gathered_in_batch_columns_equal_the_whole_batch(ids, in_batch_negatives):
    # two ranks of two users each, every rank scoring against all four gathered positives:
    # the mean of the ranks' losses is the single-process loss of the 4-user batch
    ids_t, log_q = torch.tensor(ids), torch.tensor([1.0, 0, 0.5, 0])
    kw = dict(positive_log_q=log_q, in_batch_negatives=in_batch_negatives)
    neg = (
        dict(negatives=torch.eye(4)[:2], negative_ids=torch.tensor([11, 99]))
        if not in_batch_negatives
        else {}
    )
    whole = sampled_softmax_loss(USERS, POSITIVES, ids_t, 1.0, **kw, **neg).item()
    ranks = [
        sampled_softmax_loss(
            USERS[r * 2 : r * 2 + 2], POSITIVES, ids_t, 1.0, positive_offset=r * 2, **kw, **neg
        )
        for r in (0, 1)
    ]
    assert (ranks[0].item() + ranks[1].item()) / 2 == pytest.approx(whole, abs=1e-6)


def test_gathered_rank_hand_computed():
    # rank 1 of 2 holds rows 2 and 3 (positives at columns 2, 3); row 2 shares item 10 with column 0
    loss = sampled_softmax_loss(
        USERS[2:], POSITIVES, torch.tensor([10, 11, 10, 13]), 1.0, positive_offset=2
    ).item()
    e = math.exp
    rows = [math.log(1 + e(3) + e(1)) - 3, math.log(4)]  # row 2 without column 0; row 3 all zeros
    assert loss == pytest.approx(sum(rows) / 2, abs=1e-6)


# ---------------------------------------------------------------- all positions, shared columns
# Two positions u_0 = e_0, u_1 = e_1; their positives score 2 and 1; shared columns g (ids 10, 11,
# 12) score [1, 0, 0] for u_0 and [0, 3, 0] for u_1. Row 0's positive is item 10, so g_0 is a hit.
SHARED_USERS = torch.eye(4)[:2]
SHARED_POS = torch.tensor([[2.0, 0, 0, 0], [0, 1, 0, 0]])
SHARED = torch.tensor([[1.0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0]])
SHARED_IDS = torch.tensor([10, 11, 12])


def _shared_loss(**kw):
    return all_positions_loss(
        SHARED_USERS, SHARED_POS, torch.tensor([10, 13]), SHARED, SHARED_IDS, temperature=1.0, **kw
    ).item()


def test_all_positions_loss_by_hand():
    # rows: ln(e² + 1 + 1) − 2 (g_0 masked), ln(e + 1 + e³ + 1) − 1; mean:
    assert _shared_loss() == pytest.approx(1.225271, abs=1e-5)
    # unmasked, g_0 counts as a negative of row 0: ln(e² + e + 1 + 1) − 2
    expected = (math.log(math.e**2 + math.e + 2) - 2 + math.log(math.e + 2 + math.e**3) - 1) / 2
    assert _shared_loss(mask_hits=False) == pytest.approx(expected, abs=1e-5)


def test_all_positions_logq_shifts_positive_and_shared_columns():
    # positive log q [1, 0], shared [0, 1, 0]: row 0 logits [2−1 | masked, 0−1, 0] -> ln(e + e⁻¹ + 1) − 1;
    # row 1 [1 | 0, 3−1, 0] -> ln(e + 1 + e² + 1) − 1; mean (0.407604 + 1.493811) / 2
    got = _shared_loss(positive_log_q=torch.tensor([1.0, 0.0]), shared_log_q=torch.tensor([0.0, 1.0, 0.0]))
    assert got == pytest.approx(0.950708, abs=1e-5)


def test_earlier_items_are_each_positions_prefix():
    history = torch.tensor([[5, 7, 9, 0], [4, 0, 0, 0]])
    got = earlier_items(history)
    assert got.shape == (2, 4, 4)
    assert got[0].tolist() == [[5, 0, 0, 0], [5, 7, 0, 0], [5, 7, 9, 0], [5, 7, 9, 0]]
    assert got[1].tolist() == [[4, 0, 0, 0]] * 4


def test_mask_seen_items_by_hand():
    # columns hold items 5, 7, 5 (a duplicate), 0 (an id the padding must not reach) and 11
    columns = torch.tensor([5, 7, 5, 0, 11])
    seen = torch.tensor([[5, 0, 0], [5, 7, 0], [7, 9, 0], [0, 0, 0]])
    positives = torch.tensor([7, 9, 7, 5])  # row 2 has seen its own positive again: it stays
    inf = float("-inf")
    got = mask_seen_items(torch.zeros(4, 5), seen, columns, positives)
    assert got.tolist() == [
        [inf, 0, inf, 0, 0],
        [inf, inf, inf, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]


def test_seen_items_are_no_negatives_by_hand():
    # row 0 (positive 10) has seen item 11: [2 | masked, masked, 0] -> ln(e² + 1) − 2;
    # row 1 (positive 13) has seen 11 and 13 (its own positive, no column): [1 | 0, masked, 0]
    # -> ln(e + 2) − 1
    got = _shared_loss(seen_ids=torch.tensor([[11, 0], [11, 13]]))
    expected = (math.log(math.e**2 + 1) - 2 + math.log(math.e + 2) - 1) / 2
    assert got == pytest.approx(expected, abs=1e-6)
    assert _shared_loss(seen_ids=torch.zeros(2, 2, dtype=torch.long)) == pytest.approx(_shared_loss())


def test_chunked_loss_equals_one_pass_in_value_and_gradient():
    torch.manual_seed(0)
    user, pos, shared = (torch.randn(n, 8, requires_grad=True) for n in (37, 37, 11))
    ids, shared_ids = torch.randint(0, 15, (37,)), torch.randint(0, 15, (11,))
    grads = []
    for chunk in (None, 5):
        loss = all_positions_loss(user, pos, ids, shared, shared_ids, 0.1, chunk_size=chunk)
        grads.append((loss.detach(), *torch.autograd.grad(loss, (user, pos, shared))))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("encoder", ["lstm", "gru", "sasrec"])
def test_all_positions_loss_is_the_mean_of_last_position_losses_over_prefixes(encoder):
    """The oracle: one pass over windows == every prefix as its own last-position row."""
    from recsys.models.user_tower import SASRecEncoder, UserTower, gru, lstm

    torch.manual_seed(0)
    rnn = {"hidden_dim": 8, "num_layers": 1, "dropout": 0.0, "length_groups": 8}
    sasrec = {"num_layers": 2, "num_heads": 2, "dropout": 0.2, "feedforward_mult": 1, "layout": "pre_norm"}
    build = {
        "lstm": lambda input_dim: lstm(input_dim, **rnn),
        "gru": lambda input_dim: gru(input_dim, **rnn),
        "sasrec": lambda input_dim: SASRecEncoder(input_dim, max_len=6, **sasrec),
    }
    tower = UserTower(build[encoder](input_dim=8), dim=8, history_dropout=0.0, normalize=True).eval()
    table = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)  # item vectors by id
    windows = [[2, 5, 7, 3, 9, 4], [4, 6, 2], [8, 3]]
    negatives = torch.tensor([3, 4, 11, 12, 15])
    width = max(len(w) for w in windows) - 1
    history = torch.tensor([w[:-1] + [0] * (width - len(w) + 1) for w in windows])
    targets = torch.tensor([w[1:] + [0] * (width - len(w) + 1) for w in windows])
    lengths = torch.tensor([len(w) - 1 for w in windows])
    valid = targets > 0
    all_pos = all_positions_loss(
        tower.forward_all(table[history], lengths),
        table[targets[valid]],
        targets[valid],
        table[negatives],
        negatives,
        0.1,
    )
    prefixes = [(w[:t], w[t]) for w in windows for t in range(1, len(w))]
    rows = torch.tensor([h + [0] * (width - len(h)) for h, _ in prefixes])
    last_targets = torch.tensor([t for _, t in prefixes])
    users = tower(table[rows], torch.tensor([len(h) for h, _ in prefixes]))
    last = sampled_softmax_loss(
        users,
        table[last_targets],
        last_targets,
        0.1,
        negatives=table[negatives],
        negative_ids=negatives,
        in_batch_negatives=False,  # other prefixes' targets are not columns of the shared loss
    )
    torch.testing.assert_close(all_pos, last, rtol=1e-5, atol=1e-5)


def test_exact_softmax_loss_equals_the_masked_shared_column_loss_over_the_catalog():
    torch.manual_seed(0)
    user = torch.randn(13, 8, requires_grad=True)
    catalog = torch.randn(9, 8, requires_grad=True)  # items 2..10 in columns 0..8
    targets = torch.randint(2, 11, (13,))
    losses = [
        exact_softmax_loss(user, targets - 2, catalog, 0.2, chunk_size=4),
        all_positions_loss(user, catalog[targets - 2], targets, catalog, torch.arange(2, 11), 0.2),
    ]
    grads = [torch.autograd.grad(loss, (user, catalog)) for loss in losses]
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_exact_softmax_loss_masks_seen_items_like_the_shared_column_loss():
    torch.manual_seed(0)
    user = torch.randn(13, 8, requires_grad=True)
    catalog = torch.randn(9, 8, requires_grad=True)  # items 2..10 in columns 0..8
    targets = torch.randint(2, 11, (13,))
    seen = torch.randint(0, 11, (13, 4))  # with padding (0), repeats and sometimes the target
    items = torch.arange(2, 11)
    losses = [
        exact_softmax_loss(user, targets - 2, catalog, 0.2, chunk_size=4, seen_ids=seen, catalog_ids=items),
        all_positions_loss(user, catalog[targets - 2], targets, catalog, items, 0.2, seen_ids=seen),
    ]
    grads = [torch.autograd.grad(loss, (user, catalog)) for loss in losses]
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    unmasked = exact_softmax_loss(user, targets - 2, catalog, 0.2)
    assert losses[0] < unmasked  # fewer negatives, a smaller loss
    with pytest.raises(ValueError, match="catalog_ids"):
        exact_softmax_loss(user, targets - 2, catalog, 0.2, seen_ids=seen)


def test_catalog_cross_entropy_by_hand_with_unsorted_columns_and_autocast():
    """4 positions × 4 columns, the items in the columns out of order: the loss is the formula's
    Σ_p logsumexp − target logit over the unmasked columns, its gradients the softmax − one-hot,
    in blocks of 3 rows; under bf16 autocast it stays within bf16's rounding of the fp32 value."""
    torch.manual_seed(1)
    user = torch.randn(4, 3, requires_grad=True)
    catalog = torch.randn(4, 3, requires_grad=True)
    items = torch.tensor([7, 3, 9, 5])  # column j holds items[j]
    target_columns = torch.tensor([0, 2, 1, 3])
    seen = torch.tensor([[3, 0], [9, 7], [5, 5], [0, 0]])  # row 1's 9 is its own target: not masked
    masked = masked_positions(target_columns, seen, items)
    assert masked[0].tolist() == [0 * 4 + 1, 1 * 4 + 0, 2 * 4 + 3, 2 * 4 + 3]  # a repeat is masked twice
    assert masked[1].tolist() == [0, 1, 2, 4, 4]

    logits = (user @ catalog.T).detach()
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = keep[2, 3] = False
    expected = sum(torch.logsumexp(logits[p][keep[p]], 0) - logits[p, target_columns[p]] for p in range(4))
    softmax = torch.where(keep, logits, float("-inf")).softmax(1)
    dz = softmax - torch.nn.functional.one_hot(target_columns, 4)
    got = catalog_cross_entropy(user, catalog, target_columns, masked, block=3)
    grad_user, grad_catalog = torch.autograd.grad(got, (user, catalog))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_user, dz @ catalog.detach())
    torch.testing.assert_close(grad_catalog, dz.T @ user.detach())

    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = catalog_cross_entropy(user, catalog, target_columns, masked, block=3)
        low_grad = torch.autograd.grad(low, user)[0]
    assert low.dtype == torch.float32 and low_grad.dtype == torch.float32
    torch.testing.assert_close(low, expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(low_grad, grad_user, rtol=5e-2, atol=5e-2)


def test_block_rows_fit_the_device_budget_and_the_chunk_limit():
    assert block_rows(18_346) == (1 << 23) // (4 * 18_346)  # 114 rows of a Sports catalog in 8 MiB
    assert block_rows(10**8) == 8  # never fewer than 8 rows
    assert block_rows(1_000, limit=4) == 4  # model.loss_chunk_size bounds it
    assert block_rows(18_346, device="cuda") == (1 << 29) // (4 * 18_346)
