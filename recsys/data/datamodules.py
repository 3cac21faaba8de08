"""Lightning DataModules over a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from recsys.data.dataset import PreparedDataset


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
        history = table["history"].combine_chunks()
        lengths = pc.list_value_length(history).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = pc.list_flatten(history).to_numpy()
        return cls(values, offsets, table["target"].to_numpy(), table["user_idx"].to_numpy(), max_history)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        if self.max_history:
            starts = torch.maximum(starts, ends - self.max_history)
        lengths = ends - starts
        width = max(int(lengths.max()), 1) if len(idx) else 1
        pos = torch.arange(width)
        mask = pos[None, :] < lengths[:, None]
        gather = (starts[:, None] + pos[None, :]).clamp(max=max(len(self.values) - 1, 0))
        history = torch.where(mask, self.values[gather], torch.zeros((), dtype=torch.long))
        return {
            "history": history,
            "lengths": lengths,
            "target": self.targets[idx],
            "user_idx": self.users[idx],
        }


class SequenceDataModule(L.LightningDataModule):
    """Train rows from ``train.parquet``; val/test rows from their files.

    ``prepare_data`` runs the dataset's preparer when the prepared directory is missing or was
    made with another config, so ``train`` works on a fresh checkout.
    """

    def __init__(
        self,
        preparer,
        processed_dir: str,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        max_history: int | None = None,
        seed: int = 42,
        name: str | None = None,
        raw_dir: str | None = None,
    ):
        super().__init__()
        self.preparer = preparer
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_history = max_history
        self.seed = seed
        self.name = name
        self.dataset: PreparedDataset | None = None
        self.splits: dict[str, RaggedRows] = {}

    def prepare_data(self) -> None:
        self.preparer.ensure()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = PreparedDataset.load(self.processed_dir)
        for split in ("train", "val", "test"):
            if split not in self.splits:
                self.splits[split] = RaggedRows.from_split(self.dataset, split, self.max_history)

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        rows = self.splits[split]
        base = (
            RandomSampler(rows, generator=torch.Generator().manual_seed(self.seed))
            if shuffle
            else SequentialSampler(rows)
        )
        return DataLoader(
            rows,
            sampler=BatchSampler(base, batch_size=batch_size, drop_last=False),
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
