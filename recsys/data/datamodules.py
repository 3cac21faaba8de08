"""Lightning DataModules over a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from recsys.data.candidates import CandidateSet, build_candidates
from recsys.data.dataset import PreparedDataset, flatten_lists
from recsys.data.splitting import offsets_from_lengths
from recsys.data.windows import SequenceWindows, pad_ragged
from recsys.features.ranker_features import InteractionTimeline, ItemFeatureTables, ItemTransitions


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


class _BatchedSplits(L.LightningDataModule):
    """Loaders over ``self.splits`` whose datasets take a whole list of rows per ``__getitem__``.

    Under a distributed trainer each process reads its own shard (``TrainingShard``, strided rows);
    Lightning's sampler injection would pad evaluation shards with repeated users, so it must be
    off (``trainer.use_distributed_sampler=false``, as ``trainer=ddp``/``ddp_cpu`` set).
    """

    splits: dict[str, Dataset]
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
        if shuffle:
            base = RandomSampler(rows, generator=torch.Generator().manual_seed(self.seed))
        else:
            # evaluation: rows rank, rank + world, … — every row exactly once over all ranks, so
            # sum-reduced metrics equal a single-process run (no padding with repeated users)
            base = range(rank, len(rows), world)
        batches: Sampler = BatchSampler(base, batch_size=batch_size, drop_last=False)
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


class SequenceDataModule(_BatchedSplits):
    """Train rows from ``train.parquet``; val/test rows from their files.

    ``objective="all_positions"`` serves training as user-sequence windows (``SequenceWindows``:
    every train target once per epoch, scored at every position); ``last_position`` as the
    (history prefix, next item) rows themselves. ``batch_size`` counts windows or rows.

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
        objective: str = "last_position",
    ):
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
        self.seed = seed
        self.name = name
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
                self.splits[split] = SequenceWindows.from_split(self.dataset, split, window)
            else:
                self.splits[split] = RaggedRows.from_split(self.dataset, split, self.max_history)


class CandidateLists(Dataset):
    """Batches of candidate lists with their item vectors gathered from the frozen catalog."""

    def __init__(self, candidates: CandidateSet, catalog: torch.Tensor):
        self.candidates = candidates
        self.catalog = catalog

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        c = self.candidates
        cand = c.candidates[idx]
        return {
            "user": c.user_vectors[idx],
            "items": self.catalog[cand],
            "features": c.features[idx],
            "candidates": cand,
            "mask": cand > 0,
            "labels": (cand == c.targets[idx, None]).float(),
            "target": c.targets[idx],
            "target_pos": c.target_pos[idx],
            "retrieval_rank": c.retrieval_rank[idx],
        }


class CandidateDataModule(_BatchedSplits):
    """Ranker data: top-K lists of a trained two-tower model, built from out-of-sample users.

    The retrieval model trained on ``train.parquet`` rows, so its lists for those rows are
    in-sample (the targets were fitted and sit near the top). Ranker training rows therefore
    come from the **val** split (targets the retrieval model never saw), with a seeded
    ``holdout_fraction`` of val users for the ranker's own early stopping; the **test** split is
    scored exactly like serving would (its lists exclude every earlier item).
    """

    def __init__(
        self,
        retrieval_ckpt: str,
        num_candidates: int = 200,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        holdout_fraction: float = 0.1,
        recent_window_days: float = 14.0,
        last_n: int = 5,
        max_history: int | None = None,
        seed: int = 42,
        num_workers: int = 0,
    ):
        super().__init__()
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.save_hyperparameters()  # stored in the ranker checkpoint: export reuses the feature settings
        self.retrieval_ckpt = Path(retrieval_ckpt)
        self.num_candidates = num_candidates
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.holdout_fraction = holdout_fraction
        self.window_ms = int(recent_window_days * 86_400_000)
        self.last_n = last_n
        self.max_history = max_history
        self.seed = seed
        self.num_workers = num_workers
        self.retrieval = None
        self.dataset: PreparedDataset | None = None
        self.splits: dict[str, CandidateLists] = {}

    def prepare_data(self) -> None:
        if not self.retrieval_ckpt.is_file():
            raise FileNotFoundError(
                f"retrieval_ckpt={self.retrieval_ckpt}: no such checkpoint; train one with "
                "`python -m recsys.train experiment=two_tower` and pass its best checkpoint"
            )

    def _load_retrieval(self):
        if self.retrieval is None:
            from recsys.models.two_tower import TwoTowerModule  # models import data, not vice versa

            self.retrieval = TwoTowerModule.load_from_checkpoint(
                self.retrieval_ckpt, map_location="cpu", weights_only=True
            ).eval()
            self.dataset = PreparedDataset.load(self.retrieval.hparams.dataset_dir)
            if self.max_history is None:
                self.max_history = self.dataset.manifest["config"].get("max_history")
        return self.retrieval

    @property
    def processed_dir(self) -> Path:
        self._load_retrieval()
        return self.dataset.path

    def model_inputs(self) -> dict[str, int]:
        """Shapes the ranker is built with (known only once the retrieval model is loaded)."""
        return {"embedding_dim": int(self._load_retrieval().hparams.dim)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        model = self._load_retrieval()
        tables = ItemFeatureTables.from_dataset(self.dataset)
        timeline = InteractionTimeline.from_dataset(self.dataset)
        catalog = model.encode_catalog()
        # transitions known before each split's targets: train sequences for val, + val for test
        known = {"val": ("train",), "test": ("train", "val")}
        built = {
            split: build_candidates(
                model,
                self.dataset,
                split,
                self.num_candidates,
                tables,
                timeline,
                ItemTransitions.from_dataset(self.dataset, known[split]),
                self.window_ms,
                self.max_history,
                self.last_n,
                catalog=catalog,
            )
            for split in ("val", "test")
        }
        users = np.unique(built["val"].user_idx)
        rng = np.random.default_rng(self.seed)
        holdout = rng.choice(users, max(1, round(len(users) * self.holdout_fraction)), replace=False)
        in_holdout = np.isin(built["val"].user_idx, holdout)
        self.splits = {
            "train": CandidateLists(built["val"].subset(np.flatnonzero(~in_holdout)), catalog),
            "val": CandidateLists(built["val"].subset(np.flatnonzero(in_holdout)), catalog),
            "test": CandidateLists(built["test"], catalog),
        }
