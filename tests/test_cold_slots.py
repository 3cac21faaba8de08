"""Cold candidates keep their retrieval slots; the ranker orders the warm ones around them."""

from __future__ import annotations

import pytest
import torch

from recsys.models.cold_slots import final_scores, keep_cold_slots
from recsys.models.ranker_net import RankerNet


def _order(scores: torch.Tensor) -> list[list[int]]:
    return scores.argsort(dim=1, descending=True, stable=True).tolist()


def test_cold_candidates_keep_their_positions_hand_computed():
    # retrieval order 0..4; cold at positions 1 and 3; the ranker ranks the warm ones 2 > 4 > 0
    scores = torch.tensor([[0.1, 5.0, 0.9, -3.0, 0.5]])
    cold = torch.tensor([[0, 1, 0, 1, 0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    assert _order(keep_cold_slots(scores, cold, mask)) == [[2, 1, 4, 3, 0]]
    # "rank": the ranker orders everything, the cold item with 5.0 first and the one with -3.0 last
    assert _order(final_scores(scores, cold, mask, "rank")) == [[1, 2, 4, 0, 3]]


def test_padding_is_last_and_never_a_cold_slot():
    scores = torch.tensor([[1.0, 2.0, 3.0, 9.0, 9.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    cold = torch.tensor([[1, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    final = keep_cold_slots(scores, cold, mask)
    assert _order(final)[0][:3] == [0, 2, 1]  # cold item 0 stays first; warm 2 (3.0) before 1 (2.0)
    assert torch.isinf(final[0, 3:]).all() and (final[0, 3:] < 0).all()
    assert _order(final)[1] == [0, 1, 2, 3, 4]  # no cold candidate: the ranker's order


def test_every_position_is_used_once():
    torch.manual_seed(0)
    scores, cold = torch.randn(64, 20), torch.rand(64, 20) < 0.3
    mask = torch.arange(20)[None] < torch.randint(1, 21, (64, 1))
    final = keep_cold_slots(scores, cold, mask)
    order = torch.tensor(_order(final))
    for row in range(64):
        valid = int(mask[row].sum())
        kept = [p for p in range(valid) if cold[row, p]]
        assert all(order[row, p] == p for p in kept)
        warm = [int(i) for i in order[row, :valid] if not cold[row, i]]
        assert warm == sorted(warm, key=lambda i: -float(scores[row, i]))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="cold_candidates"):
        final_scores(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), "promote")
    with pytest.raises(ValueError, match="cold_candidates"):
        RankerNet(
            8, [0], use_embeddings=True, hidden=[4], dropout=0.0, cold_candidates="promote", prior_scale=0.0
        )
