from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.item_tower import COLD_IDX, ItemTower, compact_id_rows
from recsys.models.user_tower import SASRecEncoder, UserTower, gru, lstm

# the encoders' arguments (their values live in configs/model/user_encoder/)
RNN = {"hidden_dim": 16, "num_layers": 1, "dropout": 0.0, "length_groups": 8}
SASREC = {"num_layers": 2, "num_heads": 2, "dropout": 0.2, "feedforward_mult": 1, "layout": "pre_norm"}


def _tower(**kw):
    torch.manual_seed(0)
    text = torch.randn(12, 16)
    text[:2] = 0
    is_warm = np.array([False, False] + [True] * 6 + [False] * 4)
    settings = dict(
        id_dropout=0.4, use_text=True, use_id=True, fusion="gate", sparse=False, mlp=True, normalize=True
    )
    return ItemTower(text, is_warm, dim=8, **(settings | kw))


def test_compact_id_rows():
    assert compact_id_rows(np.array([0, 0, 1, 0, 1], bool)).tolist() == [0, 1, 2, 1, 3]


def test_item_tower_shapes_and_norms():
    tower = _tower()
    out = tower(torch.tensor([[2, 3, 9], [4, 10, 11]]))
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3))


def test_cold_items_use_text_only():
    tower = _tower(id_dropout=0.0).eval()
    _, alpha = tower.fuse(torch.tensor([9, 10]))  # non-warm items -> cold row
    assert torch.all(tower.id_part(torch.tensor([9, 10])) == 0)
    assert alpha.shape == (2,)


@pytest.mark.parametrize("fusion", ["gate", "concat"])
def test_cold_row_stays_zero_after_optimizer_steps(fusion):
    tower = _tower(id_dropout=0.5, fusion=fusion).train()
    opt = torch.optim.AdamW(tower.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        loss = tower(torch.tensor([1, 2, 3, 9, 10, 0])).pow(3).sum()
        loss.backward()
        assert torch.all(tower.id_embedding.weight.grad[:2] == 0)
        opt.step()
    assert torch.all(tower.id_embedding.weight[COLD_IDX] == 0)
    assert torch.all(tower.id_embedding.weight[0] == 0)
    assert tower.id_embedding.weight[2:].abs().sum() > 0


def test_id_dropout_only_in_training():
    tower = _tower(id_dropout=1.0)
    tower.train()
    assert torch.all(tower.id_part(torch.tensor([2, 3, 4])) == 0)
    tower.eval()
    assert torch.all(tower.id_part(torch.tensor([2, 3, 4])).abs().sum(dim=-1) > 0)


def test_text_only_and_id_only():
    assert _tower(use_id=False)(torch.tensor([2])).shape == (1, 8)
    assert _tower(use_text=False)(torch.tensor([2])).shape == (1, 8)
    with pytest.raises(ValueError, match="needs the ID embedding"):
        _tower(use_id=False, use_text=False)


@pytest.mark.parametrize(
    "make", [lambda: lstm(8, **RNN), lambda: gru(8, **RNN), lambda: SASRecEncoder(8, max_len=10, **SASREC)]
)
def test_user_tower_shapes_norms_and_padding_invariance(make):
    torch.manual_seed(0)
    user = UserTower(make(), dim=8, history_dropout=0.0, normalize=True).eval()
    seq = torch.randn(3, 5, 8)
    lengths = torch.tensor([5, 2, 3])
    out = user(seq, lengths)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    # what lies beyond a user's length must not change their embedding
    noisy = seq.clone()
    noisy[1, 2:] = 100.0
    torch.testing.assert_close(user(noisy, lengths)[1], out[1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_last_output_equals_packed_final_state(cell):
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    enc = (lstm if cell == "lstm" else gru)(8, **(RNN | {"num_layers": 2})).eval()
    seq, lengths = torch.randn(4, 7, 8), torch.tensor([7, 1, 4, 2])
    _, state = enc.rnn(pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False))
    final = (state[0] if cell == "lstm" else state)[-1]
    torch.testing.assert_close(enc(seq, lengths), final, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_length_groups_match_one_full_width_pass(cell):
    """Running length-sorted slices cut to their own width gives the one-pass outputs and gradients."""
    torch.manual_seed(0)
    one = (lstm if cell == "lstm" else gru)(8, **(RNN | {"length_groups": 1}))
    sliced = (lstm if cell == "lstm" else gru)(8, **(RNN | {"length_groups": 3}))
    sliced.load_state_dict(one.state_dict())
    lengths = torch.tensor([9, 1, 4, 2, 9, 6, 3, 0, 5, 7])
    seq = torch.randn(len(lengths), 9, 8)
    a_in, b_in = seq.clone().requires_grad_(), seq.clone().requires_grad_()
    a, b = one(a_in, lengths), sliced(b_in, lengths)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    (a * torch.arange(16.0)).sum().backward()
    (b * torch.arange(16.0)).sum().backward()
    torch.testing.assert_close(b_in.grad, a_in.grad, rtol=1e-5, atol=1e-6)
    for p, q in zip(one.parameters(), sliced.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5)
    # more slices than rows still works; zero slices is refused
    torch.testing.assert_close(sliced(seq[:2], lengths[:2]), one(seq[:2], lengths[:2]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="length_groups"):
        lstm(8, **(RNN | {"length_groups": 0}))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_all_position_outputs_are_exact_under_length_slices(cell):
    """The length-sorted slices give every position the output of one full-width pass."""
    torch.manual_seed(0)
    sliced = {"lstm": lstm, "gru": gru}[cell](input_dim=6, **(RNN | {"hidden_dim": 5, "length_groups": 3}))
    whole = {"lstm": lstm, "gru": gru}[cell](input_dim=6, **(RNN | {"hidden_dim": 5, "length_groups": 1}))
    whole.load_state_dict(sliced.state_dict())
    seq, lengths = torch.randn(7, 9, 6), torch.tensor([9, 1, 4, 7, 2, 9, 5])
    reference, _ = whole.rnn(seq)
    out = sliced.forward_all(seq, lengths)
    valid = torch.arange(9)[None, :] < lengths[:, None]
    torch.testing.assert_close(out[valid], reference[valid])
    torch.testing.assert_close(sliced(seq, lengths), reference[torch.arange(7), lengths - 1])


def test_sasrec_reads_a_long_history_as_its_most_recent_items():
    """Evaluation or serving may hand a longer history than the trained positions: the user vector
    is the one of the most recent ``max_len`` items, row by row."""
    import torch

    from recsys.models.user_tower import SASRecEncoder

    torch.manual_seed(0)
    encoder = SASRecEncoder(8, max_len=4, **(SASREC | {"num_layers": 1, "dropout": 0.0})).eval()
    seq = torch.randn(2, 7, 8)
    lengths = torch.tensor([7, 3])
    out = encoder(seq, lengths)
    assert torch.allclose(out[0], encoder(seq[:1, 3:7], torch.tensor([4]))[0], atol=1e-6)
    assert torch.allclose(out[1], encoder(seq[1:, :3], torch.tensor([3]))[0], atol=1e-6)
    with pytest.raises(ValueError, match="exceeds SASRec max_len=4"):
        encoder.forward_all(seq, lengths)  # training windows must fit the positions


@pytest.mark.parametrize("layout", ["pre_norm", "post_norm"])
@pytest.mark.parametrize("length", [1, 3, 8, 13])
def test_one_history_path_equals_the_batched_tower(layout, length):
    """The serving graph encodes a posted history with ``UserTower.encode_one``: for SASRec its own
    layer evaluation, which must give the batched tower's vector (histories beyond max_len = 10
    read as their most recent items), and the batched path itself while training."""
    torch.manual_seed(1)
    encoder = SASRecEncoder(8, max_len=10, **(SASREC | {"layout": layout, "num_heads": 2}))
    tower = UserTower(encoder, dim=6, history_dropout=0.0, normalize=False).eval()
    for p in tower.parameters():  # away from the post_norm init, so every term matters
        torch.nn.init.normal_(p, std=0.3)
    items = torch.randn(length, 8)
    with torch.inference_mode():
        expected = tower(items[None], torch.tensor([length]))
        torch.testing.assert_close(tower.encode_one(items), expected, rtol=1e-5, atol=1e-5)
    tower.train()
    torch.manual_seed(2)
    trained = tower.encode_one(items)
    torch.manual_seed(2)
    torch.testing.assert_close(trained, tower(items[None], torch.tensor([length])))


def test_rnn_towers_encode_one_history_through_their_batched_path():
    torch.manual_seed(0)
    tower = UserTower(gru(8, **RNN), dim=6, history_dropout=0.0, normalize=True).eval()
    items = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_one(items), tower(items[None], torch.tensor([5])))
