"""Per-user temporal splits and the row tables (history -> target) built from them.

Interactions are handled as arrays sorted by (user, timestamp) with a *stable* sort, so equal
timestamps keep source order: a user's test target is their last row in file order among ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

TRAIN, VAL, TEST, HISTORY_ONLY, HELD_OUT = 0, 1, 2, -1, -2
# HISTORY_ONLY: a real interaction that is no row's target (global_temporal: after the val cut);
# HELD_OUT: a training interaction kept out of every training row and feature count (cold_items)


def sequence_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by user, then time; ties keep source order (stable)."""
    return np.lexsort((np.arange(len(users)), timestamps, users))


def user_bounds(sorted_users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of user-sorted arrays: where its user starts, its position, the user's length."""
    n = len(sorted_users)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = sorted_users[1:] != sorted_users[:-1]
    starts = np.flatnonzero(new_user)
    counts = np.diff(np.append(starts, n))
    start_of_row = np.repeat(starts, counts)
    return start_of_row, np.arange(n) - start_of_row, np.repeat(counts, counts)


@dataclass(kw_only=True)
class ValidationSample:
    """Which users are validated: ``validation_users`` (a seeded sample of the users that have a
    validation target), or every one (None, the published protocols). Outside the sample a user's
    validation target becomes, by ``others``, a training target (``train``: the model also learns
    the most recent step of most users) or history only (``history``: the training data of the
    every-user protocol, validated on the sample, for paired comparisons of the two).
    """

    validation_users: int | None = None
    others: str = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.others not in ("train", "history"):
            raise ValueError(f"split.others must be 'train' or 'history', got {self.others!r}")
        if self.validation_users is not None and self.validation_users < 1:
            raise ValueError(f"split.validation_users must be >= 1 or null, got {self.validation_users}")

    def sample(self, role: np.ndarray) -> np.ndarray:
        """``role`` with the validation rows outside the sample reassigned (in place)."""
        rows = np.flatnonzero(role == VAL)
        if self.validation_users is None or self.validation_users >= len(rows):
            return role
        rng = np.random.default_rng(self.seed)
        kept = rng.choice(rows, self.validation_users, replace=False)
        role[rows] = TRAIN if self.others == "train" else HISTORY_ONLY
        role[kept] = VAL
        return role


@dataclass
class LeaveOneOutSplitter(ValidationSample):
    """Last interaction -> test, second-to-last -> val, the rest -> train (users with >= 3 rows).

    Users with exactly two rows get a test row only; single-row users only feed training.

    ``skip_last`` > 0 splits what comes before each user's last ``skip_last`` interactions, which
    stay history only (the future of this split: in no row, no count). With 2 it is the data of a
    model fitted before the served split's val and test: its test targets are the served model's
    last training targets, the lists a ranker learns from (``recsys.candidates``).
    ``test_targets`` > 1 makes each user's last that many interactions test rows (each with the
    history before it, earlier test targets included) and the one before them val: the ranker's
    several lists a user (``holdout_targets``).
    """

    name: str = "leave_one_out"
    dir_suffix: str = ""  # the prepared directory is <data.name><dir_suffix>: the default split
    skip_last: int = 0
    test_targets: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.skip_last < 0:
            raise ValueError(f"split.skip_last must be >= 0, got {self.skip_last}")
        if self.test_targets < 1:
            raise ValueError(f"split.test_targets must be >= 1, got {self.test_targets}")

    def assign(self, sorted_users: np.ndarray, sorted_timestamps: np.ndarray) -> np.ndarray:
        _, pos, length = user_bounds(sorted_users)
        role = np.full(len(sorted_users), TRAIN, dtype=np.int8)
        role[pos >= length - self.skip_last] = HISTORY_ONLY
        length = length - self.skip_last  # what this split divides
        first_test = length - self.test_targets
        role[(pos >= 1) & (pos >= first_test) & (pos < length)] = TEST  # every target has a history
        role[(pos >= 1) & (pos == first_test - 1)] = VAL
        return self.sample(role)


@dataclass
class GlobalTemporalSplitter(ValidationSample):
    """Cut the timeline at two quantiles: train before the first, val/test targets after.

    A user's val (test) target is their first interaction in the val window (after the test
    cut); its history is everything the user did before it, so no future leaks into history.
    With a validation sample and ``others=train``, the other users' val targets (all before the
    test cut) are training targets: test stays in the future of everything trained.
    """

    val_quantile: float = 0.8
    test_quantile: float = 0.9
    name: str = "global_temporal"
    dir_suffix: str = "_global_temporal"  # prepared next to the leave-one-out dataset, never over it
    needs_clock_time: ClassVar[bool] = True  # one cut across users: per-user ordinals cannot be compared

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.val_quantile < self.test_quantile < 1.0:
            raise ValueError(
                f"global_temporal needs 0 < val_quantile < test_quantile < 1, got "
                f"{self.val_quantile} and {self.test_quantile}"
            )

    def assign(self, sorted_users: np.ndarray, sorted_timestamps: np.ndarray) -> np.ndarray:
        t_val, t_test = np.quantile(sorted_timestamps, [self.val_quantile, self.test_quantile])
        start, pos, _ = user_bounds(sorted_users)
        role = np.where(sorted_timestamps < t_val, TRAIN, HISTORY_ONLY).astype(np.int8)
        for window, label in (
            ((sorted_timestamps >= t_val) & (sorted_timestamps < t_test), VAL),
            (sorted_timestamps >= t_test, TEST),
        ):
            rows = np.flatnonzero(window & (pos > 0))
            first_per_user = rows[np.unique(start[rows], return_index=True)[1]]
            role[first_per_user] = label
        return self.sample(role)


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """[0, l0, l0 + l1, …]: where each ragged row starts in the flat values (int64, n + 1 entries)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def ragged_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), with no per-row Python."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = offsets_from_lengths(lengths)
    flat = np.arange(offsets[-1], dtype=np.int64)
    return flat + np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths)


def _history_chunk(
    sorted_items: np.ndarray, start: np.ndarray, targets: np.ndarray, max_history: int
) -> tuple[pa.Array, np.ndarray]:
    hstart = np.maximum(start[targets], targets - max_history)
    keep = targets > hstart
    targets, hstart = targets[keep], hstart[keep]
    lengths = (targets - hstart).astype(np.int32)
    offsets = offsets_from_lengths(lengths)
    flat = ragged_indices(hstart, lengths)
    history = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(sorted_items[flat].astype(np.int32))
    )
    return history, targets


def history_rows(
    sorted_users: np.ndarray,
    sorted_items: np.ndarray,
    sorted_timestamps: np.ndarray,
    targets: np.ndarray,
    max_history: int,
    positions: np.ndarray | None = None,
    chunk_rows: int = 1 << 18,
) -> dict[str, pa.ChunkedArray]:
    """Columns ``user_idx, history, target, timestamp, position`` for the given target rows.

    Each history is the user's items strictly before the target, oldest first, capped to the
    most recent ``max_history``; rows with an empty history are dropped. ``position`` is the
    target's row in the full interactions table (``positions[i]`` for sorted row i; i itself
    when the arrays are that table). Rows are built in chunks so temporary index arrays stay
    bounded (≈ chunk_rows × max_history).
    """
    start, _, _ = user_bounds(sorted_users)
    targets = np.asarray(targets, dtype=np.int64)
    positions = np.arange(len(sorted_users), dtype=np.int64) if positions is None else positions
    columns: dict[str, list] = {"user_idx": [], "history": [], "target": [], "timestamp": [], "position": []}
    for lo in range(0, max(len(targets), 1), chunk_rows):
        history, kept = _history_chunk(sorted_items, start, targets[lo : lo + chunk_rows], max_history)
        columns["history"].append(history)
        columns["user_idx"].append(pa.array(sorted_users[kept].astype(np.int32)))
        columns["target"].append(pa.array(sorted_items[kept].astype(np.int32)))
        columns["timestamp"].append(pa.array(sorted_timestamps[kept].astype(np.int64)))
        columns["position"].append(pa.array(positions[kept].astype(np.int64)))
    types = {
        "user_idx": pa.int32(),
        "history": pa.list_(pa.int32()),
        "target": pa.int32(),
        "timestamp": pa.int64(),
        "position": pa.int64(),
    }
    return {name: pa.chunked_array(parts, type=types[name]) for name, parts in columns.items()}
