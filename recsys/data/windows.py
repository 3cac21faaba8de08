"""All-position training windows: each user's train sequence cut into windows of up to
``max_history + 1`` items that together hold every train target exactly once.

A causal encoder reads window items 0..n-2 and is scored at position t against item t+1, so one
forward pass learns ``n − 1`` targets instead of one (SASRec's objective). Windows are aligned
to the end of the sequence: the most recent targets get the longest context, and consecutive
windows overlap by one item (the input of the first target of the later window).

With ``stride`` < ``max_history`` a window scores only its last ``stride`` targets and reads the
items before them as context (their targets are 0, like padding): targets early in a window then
see up to ``max_history − stride`` earlier items instead of almost none, closer to what a user
vector sees at serving time (the full recent history), at ``max_history / stride`` times the
windows per epoch. Each target is still scored exactly once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from recsys.data.dataset import PreparedDataset, flatten_lists
from recsys.data.splitting import offsets_from_lengths, ragged_indices


def user_sequences(
    values: np.ndarray, offsets: np.ndarray, targets: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's train sequence from sliding-window rows: (flat items, offsets, user per sequence).

    Rows of one user are consecutive targets in time order (how ``history_rows`` writes them), so
    a user's sequence is their first row's history followed by every row's target.
    """
    order = np.argsort(users, kind="stable")  # rows of a user keep their (time) order
    users, targets = users[order], targets[order]
    row_start, row_end = offsets[:-1][order], offsets[1:][order]
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, int)
    n_rows = np.diff(np.r_[first, len(users)])
    head = row_end[first] - row_start[first]
    seq_offsets = offsets_from_lengths(head + n_rows)
    items = np.empty(seq_offsets[-1], dtype=np.int64)
    items[ragged_indices(seq_offsets[:-1], head)] = values[ragged_indices(row_start[first], head)]
    items[ragged_indices(seq_offsets[:-1] + head, n_rows)] = targets
    return items, seq_offsets, users[first]


def window_bounds(
    seq_offsets: np.ndarray, max_history: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, sequence, first scored target) of every window: one ends every ``stride``
    (default ``max_history``) targets from the end; it scores the targets at ``first..end-1``."""
    stride = max_history if stride is None else stride
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    if not 1 <= stride <= max_history:
        raise ValueError(f"window stride must be in [1, max_history={max_history}], got {stride}")
    start, length = seq_offsets[:-1], np.diff(seq_offsets)
    n_windows = np.where(length >= 2, -(-(length - 1) // stride), 0)  # ceil((n − 1) / stride)
    seq = np.repeat(np.arange(len(length)), n_windows)
    back = ragged_indices(np.zeros(len(length), dtype=np.int64), n_windows)  # 0 = the last window
    end = start[seq] + length[seq] - back * stride
    begin = np.maximum(start[seq], end - max_history - 1)
    first = np.maximum(start[seq] + 1, end - stride)
    return begin, end, seq, first


def pad_ragged(values: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``values[starts[i]:ends[i]]`` as rows right-padded with 0, in one vectorized gather."""
    lengths = ends - starts
    width = max(int(lengths.max()), 1) if len(starts) else 1
    pos = torch.arange(width)
    gather = (starts[:, None] + pos[None, :]).clamp(max=max(len(values) - 1, 0))
    return torch.where(pos[None, :] < lengths[:, None], values[gather], torch.zeros((), dtype=torch.long))


class SequenceWindows(Dataset):
    """Batches of windows: ``history`` [B, L] (items 0..n-2), ``targets`` [B, L] (items 1..n-1;
    0 past each window's end and at context positions), ``lengths`` [B] and ``user_idx``;
    indexed by a list of windows. A position is trained where its target is not 0."""

    def __init__(
        self,
        items: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        users: np.ndarray,
        first_scored: np.ndarray | None = None,
    ):
        self.items = torch.from_numpy(np.asarray(items, dtype=np.int64))
        self.starts = torch.from_numpy(np.asarray(starts, dtype=np.int64))
        self.ends = torch.from_numpy(np.asarray(ends, dtype=np.int64))
        self.users = torch.from_numpy(np.asarray(users, dtype=np.int64))
        first = np.asarray(starts, dtype=np.int64) + 1 if first_scored is None else first_scored
        self.first_scored = torch.from_numpy(np.asarray(first, dtype=np.int64))

    @classmethod
    def from_split(
        cls, dataset: PreparedDataset, split: str, max_history: int, stride: int | None = None
    ) -> SequenceWindows:
        table = dataset.read_split(split, ["user_idx", "history", "target"])
        values, lengths = flatten_lists(table["history"])
        items, seq_offsets, seq_users = user_sequences(
            values.astype(np.int64),
            offsets_from_lengths(lengths),
            table["target"].to_numpy(),
            table["user_idx"].to_numpy(),
        )
        starts, ends, seq, first = window_bounds(seq_offsets, max_history, stride)
        return cls(items, starts, ends, seq_users[seq], first)

    @property
    def n_targets(self) -> int:
        return int((self.ends - self.first_scored).sum())

    def __len__(self) -> int:
        return len(self.starts)

    def row_lengths(self) -> torch.Tensor:
        """Each window's input length (what its batch pads to)."""
        return self.ends - self.starts - 1

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        starts, ends = self.starts[idx], self.ends[idx]
        targets = pad_ragged(self.items, starts + 1, ends)
        context = starts[:, None] + 1 + torch.arange(targets.shape[1])[None, :] < self.first_scored[idx, None]
        return {
            "history": pad_ragged(self.items, starts, ends - 1),
            "targets": targets.masked_fill(context, 0),
            "lengths": ends - starts - 1,
            "user_idx": self.users[idx],
        }
