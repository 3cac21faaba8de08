"""Lightning DataModules over a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from recsys.data.dataset import PreparedDataset, flatten_lists
from recsys.data.splitting import offsets_from_lengths
from recsys.data.windows import SequenceWindows, pad_ragged


class RaggedRows(Dataset):
    """(history, target) rows kept as flat arrays + offsets; indexed by a *list* of rows.

    A whole batch is padded with one vectorized gather, so no per-row Python runs in the
    data path. Histories are right-padded with 0 and cut to their most recent ``max_history``.
    """

    def __init__(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        targets: np.ndarray,
        users: np.ndarray,
        max_history: int | None = None,
    ):
        # int64 copies: Arrow hands out read-only int32 buffers
        self.values = torch.from_numpy(np.asarray(values, dtype=np.int64).copy())
        self.offsets = torch.from_numpy(np.asarray(offsets, dtype=np.int64).copy())
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64).copy())
        self.users = torch.from_numpy(np.asarray(users, dtype=np.int64).copy())
        self.max_history = max_history

    @classmethod
    def from_split(cls, dataset: PreparedDataset, split: str, max_history: int | None = None) -> RaggedRows:
        table = dataset.read_split(split, ["user_idx", "history", "target"])
        values, lengths = flatten_lists(table["history"])
        return cls(
            values,
            offsets_from_lengths(lengths),
            table["target"].to_numpy(),
            table["user_idx"].to_numpy(),
            max_history,
        )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        if self.max_history:
            starts = torch.maximum(starts, ends - self.max_history)
        return {
            "history": pad_ragged(self.values, starts, ends),
            "lengths": ends - starts,
            "target": self.targets[idx],
            "user_idx": self.users[idx],
            "row": idx,  # the split's row: its own seen items (a user may have several rows)
        }


class TrainingShard(Sampler):
    """Every ``world``-th full batch, starting at ``rank``, the same number on every rank: the
    gathered in-batch negatives need equal shapes, and DDP needs equal step counts."""

    def __init__(self, batches: BatchSampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world
        full = len(batches.sampler) // batches.batch_size
        self.count = full // world
        if self.count == 0:
            raise ValueError(
                f"{len(batches.sampler)} training rows make {full} full batches of "
                f"{batches.batch_size}: fewer than the {world} ranks; lower data.batch_size"
            )

    def __iter__(self):
        mine = (b for i, b in enumerate(self.batches) if i % self.world == self.rank)
        for _, batch in zip(range(self.count), mine, strict=False):
            yield batch

    def __len__(self) -> int:
        return self.count


class LengthGroupedBatches(Sampler):
    """Shuffled batches of rows of similar length, each holding about the same number of items.

    Each epoch: a random permutation cut into groups of ``group_batches`` batches' worth of rows,
    each group sorted by length and cut into exactly as many batches as plain batching makes of
    it (⌈rows / batch_size⌉), each holding about the same number of padded items (short rows come
    many to a batch), then every batch of the epoch in random order. The count is the same every
    epoch: Lightning reads it once and validates when an epoch reaches it. Sparse data has mostly short
    histories and a plain batch pads to its longest row: on the Amazon 5-core files most of a
    window batch was padding. ``sampler`` and ``batch_size`` as on ``BatchSampler``.
    """

    def __init__(
        self, lengths: torch.Tensor, batch_size: int, generator: torch.Generator, group_batches: int = 64
    ):
        self.lengths = torch.as_tensor(lengths).clamp(min=1)
        self.batch_size, self.generator, self.group_batches = batch_size, generator, group_batches
        self.sampler = range(len(self.lengths))
        self._next: list[list[int]] | None = None

    @staticmethod
    def _cut(widths: torch.Tensor, budget: int) -> list[int]:
        """Start of each batch when length-sorted rows (``widths`` non-increasing) are cut where
        the padded size (rows × first row's width) would pass ``budget``."""
        starts, lo, n = [], 0, len(widths)
        while lo < n:
            starts.append(lo)
            lo += max(budget // int(widths[lo]), 1)
        return starts

    def _batches(self, rows: torch.Tensor) -> list[list[int]]:
        """``rows`` (longest first) in ⌈len / batch_size⌉ batches of about equal padded size: the
        smallest budget whose cut makes at most that many, then the largest batches halved."""
        k = -(-len(rows) // self.batch_size)
        widths = self.lengths[rows]
        lo, hi = int(widths[0]), int(widths.sum())
        while lo < hi:  # budgets: more batches below, at most k at and above
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if len(self._cut(widths, mid)) <= k else (mid + 1, hi)
        starts = self._cut(widths, lo)
        out = [rows[a:b].tolist() for a, b in zip(starts, [*starts[1:], len(rows)], strict=True)]
        while len(out) < k:  # k <= rows: a batch of two or more rows is left to halve
            big = max(range(len(out)), key=lambda b: len(out[b]))
            half = len(out[big]) // 2
            out[big : big + 1] = [out[big][:half], out[big][half:]]
        return out

    def _plan(self) -> list[list[int]]:
        """The next epoch's batches, drawn once: ``__len__`` then ``__iter__`` see the same ones."""
        if self._next is None:
            order = torch.randperm(len(self.lengths), generator=self.generator)
            group = self.batch_size * self.group_batches
            batches: list[list[int]] = []
            for lo in range(0, len(order), group):
                rows = order[lo : lo + group]
                longest_first = torch.argsort(self.lengths[rows], descending=True, stable=True)
                batches.extend(self._batches(rows[longest_first]))
            shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
            self._next = [batches[b] for b in shuffled]
        return self._next

    def __iter__(self):
        batches, self._next = self._plan(), None
        yield from batches

    def __len__(self) -> int:
        return len(self._plan())


class BatchedSplits(L.LightningDataModule):
    """Loaders over ``self.splits`` whose datasets take a whole list of rows per ``__getitem__``.

    Under a distributed trainer each process reads its own shard (``TrainingShard``, strided rows);
    Lightning's sampler injection would pad evaluation shards with repeated users, so it must be
    off (``trainer.use_distributed_sampler=false``, as ``trainer=ddp``/``ddp_cpu`` set).
    """

    splits: dict[str, Dataset]
    group_by_length: bool = False
    batch_size: int
    eval_batch_size: int
    num_workers: int
    seed: int

    def _shard(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        if trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError(
                "this datamodule shards batches itself under a distributed trainer: set "
                "trainer.use_distributed_sampler=false (trainer=ddp and trainer=ddp_cpu do)"
            )
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        rows = self.splits[split]
        rank, world = self._shard()
        generator = torch.Generator().manual_seed(self.seed)
        batches: Sampler
        if shuffle and self.group_by_length and hasattr(rows, "row_lengths"):
            batches = LengthGroupedBatches(rows.row_lengths(), batch_size, generator)
        elif shuffle:
            batches = BatchSampler(RandomSampler(rows, generator=generator), batch_size, drop_last=False)
        else:
            # evaluation: rows rank, rank + world, … — every row exactly once over all ranks, so
            # sum-reduced metrics equal a single-process run (no padding with repeated users)
            batches = BatchSampler(range(rank, len(rows), world), batch_size=batch_size, drop_last=False)
        if shuffle and world > 1:
            batches = TrainingShard(batches, rank, world)
        return DataLoader(
            rows,
            sampler=batches,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)


OBJECTIVES = ("all_positions", "last_position")


class SequenceDataModule(BatchedSplits):
    """Train rows from ``train.parquet``; val/test rows from their files.

    ``objective="all_positions"`` serves training as user-sequence windows (``SequenceWindows``:
    every train target once per epoch, scored at every position; ``window_stride`` < history
    gives each window's first targets context); ``last_position`` as the
    (history prefix, next item) rows themselves. ``batch_size`` counts windows or rows.

    ``prepare_data`` runs the dataset's preparer when the prepared directory is missing or was
    made with another config, so ``train`` works on a fresh checkout.
    """

    def __init__(
        self,
        preparer,
        processed_dir: str,
        *,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        max_history: int | None,
        seed: int,
        objective: str,
        window_stride: int | None,
        exclude_seen: bool,
        group_by_length: bool,
        name: str | None = None,  # the data config's own keys, unused here
        raw_dir: str | None = None,
        format: str | None = None,
    ):
        """Values live in configs/datamodule/sequence.yaml (and each data config): none here."""
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.preparer = preparer
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_history = max_history
        self.window_stride = window_stride
        self.exclude_seen = exclude_seen  # the preparer's switch (the dataset's manifest holds it)
        self.group_by_length = group_by_length  # training batches of similar lengths (LengthGroupedBatches)
        self.seed = seed
        self.name = name
        self.format = format  # the raw files' release (data=amazon), read by the preparer's source
        self.dataset: PreparedDataset | None = None
        self.splits: dict[str, RaggedRows] = {}

    def prepare_data(self) -> None:
        self.preparer.ensure()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = PreparedDataset.load(self.processed_dir)
        # only what the stage reads: at 434K items the train rows alone hold ~100M history ids
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        for split in needed:
            if split in self.splits:
                continue
            if split == "train" and self.objective == "all_positions":
                window = self.max_history or self.dataset.manifest["config"]["max_history"]
                self.splits[split] = SequenceWindows.from_split(
                    self.dataset, split, window, self.window_stride
                )
            else:
                self.splits[split] = RaggedRows.from_split(self.dataset, split, self.max_history)
