"""Category crosses of (user, candidate) pairs against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.features.category_features import (
    ItemCategories,
    category_crosses,
    category_popularity_crosses,
    category_totals,
)


def table() -> ItemCategories:
    # rows 0/1 padding; items 2: A, 3: A+B, 4: C, 5: none, 6: B
    return ItemCategories.from_lists(np.array([2, 3, 4, 5, 6]), [["A"], ["A", "B"], ["C"], [], ["B"]], 7)


def test_codes_per_item_row():
    t = table()
    assert t.vocabulary == ("A", "B", "C")
    np.testing.assert_array_equal(t.codes.numpy(), [[0, 0], [0, 0], [1, 0], [1, 2], [3, 0], [0, 0], [2, 0]])


def test_share_and_recency_by_hand():
    history = torch.tensor([[2, 3, 4, 2], [6, 0, 0, 0]])
    lengths = torch.tensor([4, 1])
    candidates = torch.tensor([[3, 4, 5, 6], [2, 3, 5, 6]])
    share, recency = category_crosses(table(), candidates, history, lengths)
    # user 0: A in 3 of 4 history items (2, 3, 2), B in 1 (3), C in 1 (4); latest A at position 4,
    # B at 2, C at 3 (1-based, 4 = the last item)
    # candidate 3 (A, B): mean(3/4, 1/4); 4 (C): 1/4; 5: no categories; 6 (B): 1/4
    np.testing.assert_allclose(share[0].numpy(), [0.5, 0.25, 0.0, 0.25])
    # 3: A is in the last item -> 1/(1+0); 4: C one step back -> 1/2; 6: B two steps back -> 1/3
    np.testing.assert_allclose(recency[0].numpy(), [1.0, 0.5, 0.0, 1 / 3])
    # user 1: history [6] (B); the padding counts nowhere
    np.testing.assert_allclose(share[1].numpy(), [0.0, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(recency[1].numpy(), [0.0, 1.0, 0.0, 1.0])


def test_no_candidates_and_no_categories():
    share, recency = category_crosses(
        table(), torch.zeros(1, 0, dtype=torch.long), torch.tensor([[2]]), torch.tensor([1])
    )
    assert share.shape == recency.shape == (1, 0)
    empty = ItemCategories.from_lists(np.array([2, 3]), [[], []], 4)
    share, recency = category_crosses(
        empty, torch.tensor([[2, 3]]), torch.tensor([[3, 2]]), torch.tensor([2])
    )
    assert share.abs().sum() == recency.abs().sum() == 0


def test_items_added_later_keep_the_vocabulary():
    t = table().appended([["B", "Z"], ["C", "A", "B"]])  # Z was never seen in training: dropped
    assert t.vocabulary == ("A", "B", "C") and t.codes.shape == (9, 3)
    np.testing.assert_array_equal(t.codes[7:].numpy(), [[2, 0, 0], [3, 1, 2]])
    share, _ = category_crosses(t, torch.tensor([[7, 8]]), torch.tensor([[6]]), torch.tensor([1]))
    assert share[0].tolist() == pytest.approx([1.0, 1 / 3])


def test_category_popularity_crosses_by_hand():
    # training counts per row: items 2 (A): 6, 3 (A+B): 2, 4 (C): 5, 5 (none): 9, 6 (B): 8
    counts = torch.tensor([0.0, 0.0, 6.0, 2.0, 5.0, 9.0, 8.0])
    # category totals: A = 6 + 2 = 8, B = 2 + 8 = 10, C = 5
    history = torch.tensor([[2, 3, 4, 2], [6, 0, 0, 0]])
    lengths = torch.tensor([4, 1])
    candidates = torch.tensor([[3, 4, 5, 6], [2, 3, 5, 6]])
    totals = category_totals(table(), counts)
    assert totals.tolist() == [0.0, 8.0, 10.0, 5.0]  # none, A, B, C
    favoured, staying = category_popularity_crosses(table(), counts, totals, candidates, history, lengths)
    # user 0: shares A 3/4, B 1/4, C 1/4; last item 2 (A)
    # 3 (A, B): 3/4 · 2/8 + 1/4 · 2/10; 4 (C): 1/4 · 5/5; 5: none; 6 (B): 1/4 · 8/10
    floor = 1e-6
    expected = [3 / 4 * 2 / 8 + 1 / 4 * 2 / 10, 1 / 4, 0.0, 1 / 4 * 8 / 10]
    np.testing.assert_allclose(favoured[0].exp().numpy() - floor, expected, atol=1e-7)
    # staying: only A counts (the last item's category): 3 -> 2/8, the rest 0
    np.testing.assert_allclose(staying[0].exp().numpy() - floor, [2 / 8, 0.0, 0.0, 0.0], atol=1e-7)
    # user 1: history [6] (B), share B = 1, last item B; 2 (A): 0; 3 (A, B): 2/10; 6 (B): 8/10
    np.testing.assert_allclose(favoured[1].exp().numpy() - floor, [0.0, 0.2, 0.0, 0.8], atol=1e-7)
    np.testing.assert_allclose(staying[1].exp().numpy() - floor, [0.0, 0.2, 0.0, 0.8], atol=1e-7)
