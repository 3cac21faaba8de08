"""All-position training windows: sequences rebuilt from prefix rows, every target exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.windows import SequenceWindows, user_sequences, window_bounds

# user 7: items 10..16 (6 train targets), user 3: items 20, 21 (1 target); rows as history_rows
# writes them: user-sorted, in time order, history capped at 3
SEQS = {7: [10, 11, 12, 13, 14, 15, 16], 3: [20, 21]}


def _rows(cap: int = 3):
    values, offsets, targets, users = [], [0], [], []
    for user in (3, 7):
        seq = SEQS[user]
        for t in range(1, len(seq)):
            values += seq[max(0, t - cap) : t]
            offsets.append(len(values))
            targets.append(seq[t])
            users.append(user)
    return (np.array(values), np.array(offsets), np.array(targets), np.array(users))


def test_user_sequences_rebuild_the_full_train_sequence_from_capped_rows():
    items, offsets, users = user_sequences(*_rows(cap=3))
    rebuilt = {int(u): items[offsets[i] : offsets[i + 1]].tolist() for i, u in enumerate(users)}
    assert rebuilt == SEQS


@pytest.mark.parametrize("max_history", [1, 2, 3, 6, 10])
def test_windows_cover_every_target_exactly_once(max_history):
    _, offsets, users = user_sequences(*_rows())
    starts, ends, seq, first = window_bounds(offsets, max_history)
    assert np.array_equal(first, starts + 1)  # no context positions by default
    assert np.all(ends - starts <= max_history + 1) and np.all(ends - starts >= 2)
    covered = []  # (user, position of the target in its sequence)
    for s, e, q in zip(starts, ends, seq, strict=True):
        covered += [(int(users[q]), p - offsets[q]) for p in range(s + 1, e)]
    expected = [(int(u), p) for i, u in enumerate(users) for p in range(1, offsets[i + 1] - offsets[i])]
    assert sorted(covered) == sorted(expected)


def test_the_last_window_of_a_user_ends_at_their_last_item_with_full_context():
    items, offsets, _ = user_sequences(*_rows())
    starts, ends, _, _ = window_bounds(offsets, 4)
    windows = [items[s:e].tolist() for s, e in zip(starts, ends, strict=True)]
    assert windows == [[20, 21], [12, 13, 14, 15, 16], [10, 11, 12]]


def test_window_batch_shifts_targets_by_one_and_pads_with_zero():
    items, offsets, users = user_sequences(*_rows())
    starts, ends, seq, _ = window_bounds(offsets, 4)
    batch = SequenceWindows(items, starts, ends, users[seq])[[0, 1, 2]]
    assert batch["history"].tolist() == [[20, 0, 0, 0], [12, 13, 14, 15], [10, 11, 0, 0]]
    assert batch["targets"].tolist() == [[21, 0, 0, 0], [13, 14, 15, 16], [11, 12, 0, 0]]
    assert batch["lengths"].tolist() == [1, 4, 2]
    assert batch["user_idx"].tolist() == [3, 7, 7]
    valid = torch.arange(4)[None, :] < batch["lengths"][:, None]
    assert torch.equal(valid, batch["targets"] > 0)


@pytest.mark.parametrize(("max_history", "stride"), [(1, 1), (3, 1), (3, 2), (6, 2), (10, 4)])
def test_strided_windows_score_every_target_once_with_context(max_history, stride):
    items, offsets, users = user_sequences(*_rows())
    starts, ends, seq, first = window_bounds(offsets, max_history, stride)
    batch = SequenceWindows(items, starts, ends, users[seq], first)[list(range(len(starts)))]
    scored = []
    for row, (s, q) in enumerate(zip(starts, seq, strict=True)):
        for pos in range(int(batch["lengths"][row])):
            target = int(batch["targets"][row, pos])
            if target:
                assert target == items[s + 1 + pos]
                # a scored target reads its whole sequence, or max_history − stride items at least
                assert pos + 1 >= min(max_history - stride + 1, s + 1 + pos - offsets[q])
                scored.append((int(users[q]), s + 1 + pos - offsets[q]))
    expected = [(int(u), p) for i, u in enumerate(users) for p in range(1, offsets[i + 1] - offsets[i])]
    assert sorted(scored) == sorted(expected)
    assert SequenceWindows(items, starts, ends, users[seq], first).n_targets == len(expected)


def test_stride_2_windows_of_4_by_hand():
    items, offsets, users = user_sequences(*_rows())
    starts, ends, seq, first = window_bounds(offsets, 4, stride=2)
    batch = SequenceWindows(items, starts, ends, users[seq], first)[list(range(len(starts)))]
    # user 3: [20, 21]; user 7: targets 15,16 | 13,14 | 11,12 with up to 2 context items before them
    assert batch["history"].tolist() == [[20, 0, 0, 0], [12, 13, 14, 15], [10, 11, 12, 13], [10, 11, 0, 0]]
    assert batch["targets"].tolist() == [[21, 0, 0, 0], [0, 0, 15, 16], [0, 0, 13, 14], [11, 12, 0, 0]]


def test_a_stride_outside_1_to_max_history_is_refused():
    _, offsets, _ = user_sequences(*_rows())
    for stride in (0, 5):
        with pytest.raises(ValueError, match="stride"):
            window_bounds(offsets, 4, stride)


def test_windows_from_a_prepared_split_hold_every_train_target(trained):
    from recsys.data.dataset import PreparedDataset

    dataset = PreparedDataset.load(trained["root"] / "data" / "processed" / "synthetic")
    windows = SequenceWindows.from_split(dataset, "train", max_history=5)
    n_rows = dataset.read_split("train", ["target"]).num_rows
    assert windows.n_targets == n_rows
    batch = windows[list(range(len(windows)))]
    assert int((batch["targets"] > 0).sum()) == n_rows


def test_length_grouped_batches_cover_every_row_once_in_as_many_batches_every_epoch():
    import torch

    from recsys.data.datamodules import LengthGroupedBatches

    lengths = torch.tensor([1, 50, 3, 3, 2, 40, 1, 1, 7, 9] * 30)
    batches = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(0), group_batches=4)
    planned = len(batches)
    drawn = list(batches)
    assert len(drawn) == planned  # __len__ announced this epoch's batches
    assert sorted(i for b in drawn for i in b) == list(range(len(lengths)))
    # as many batches as plain batching makes of each group (9 groups of 32 rows, one of 12: 9 × 4 + 2),
    # every epoch: Lightning reads the count once and validates when an epoch reaches it
    assert planned == 38 and [len(list(batches)) for _ in range(5)] == [38] * 5
    # each batch pads to its longest row: padded items stay near the real ones, where plain batches
    # of these rows (a 50 in every 8) pad to over 4 times them
    padded = sum(len(b) * int(lengths[b].max()) for b in drawn)
    plain = sum(8 * int(lengths[i : i + 8].max()) for i in range(0, len(lengths), 8))
    assert padded < 1.5 * int(lengths.sum()) < plain / 2
    assert max(len(b) for b in drawn) > 8 > min(len(b) for b in drawn)  # short rows come many to a batch
    again = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(0), group_batches=4)
    assert list(again) == drawn and list(again) != drawn  # seeded, and a new draw every epoch
