"""The ranker's DataModule: candidate lists of a trained two-tower model, batched."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recsys.candidates.build import CandidateSet, build_candidates
from recsys.candidates.holdout_fit import SKIP_LAST
from recsys.candidates.settings import CandidateSettings
from recsys.data.datamodules import BatchedSplits
from recsys.data.dataset import PreparedDataset
from recsys.features.attribute_features import AttributeLayout, Attributes
from recsys.features.ranker_features import InteractionTimeline, ItemFeatureTables
from recsys.features.transitions import ItemTransitions, TimedTransitions
from recsys.models.two_tower_module import TwoTowerModule


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


# what a ranker checkpoint written before a DataModule option existed meant by its absence
LEGACY_DATAMODULE = {
    "batch_size": 64,
    "eval_batch_size": 256,
    "holdout_fraction": 0.1,
    "seed": 42,
    "num_workers": 0,
    "holdout_fold": 0,
    "max_history": None,
    "features_as_of_request": None,
    "holdout_ckpt": None,
    "attributes": False,
}


def model_lists(
    model: TwoTowerModule,
    dataset: PreparedDataset,
    settings: CandidateSettings,
    splits: tuple[str, ...],
    layout: AttributeLayout | None = None,
) -> tuple[dict[str, CandidateSet], torch.Tensor]:
    """A retrieval model's candidate lists for ``splits`` of its dataset, with their features (counts
    and transitions known before each split's targets; the declared attributes encoded with
    ``layout``; none by default), and the catalog the lists index."""
    tables = ItemFeatureTables.from_dataset(dataset)
    attributes = Attributes.from_dataset(dataset, layout) if layout is not None and layout.width else None
    timeline = InteractionTimeline.from_dataset(dataset)
    catalog = model.encode_catalog()
    if settings.features_as_of_request:
        timed = TimedTransitions.from_dataset(dataset)
        transitions = {"val": timed, "test": timed}
    else:  # transitions known before each split's targets: train sequences for val, + val for test
        known = {"val": ("train",), "test": ("train", "val")}
        transitions = {s: ItemTransitions.from_dataset(dataset, known[s]) for s in splits}
    built = {
        split: build_candidates(
            model,
            dataset,
            split,
            settings,
            tables,
            timeline,
            transitions[split],
            catalog=catalog,
            attributes=attributes,
        )
        for split in splits
    }
    return built, catalog


class CandidateDataModule(BatchedSplits):
    """Ranker data: top-K lists of a trained two-tower model, built from out-of-sample users.

    The retrieval model trained on ``train.parquet`` rows, so its lists for those rows are
    in-sample (the targets were fitted and sit near the top). Ranker training rows therefore
    come from the **val** split (targets the retrieval model never saw), with a seeded
    ``holdout_fraction`` of val users for the ranker's validation (``holdout_fold`` picks which
    one, for cross-validation); ``holdout_fraction=0`` trains on every val user and validates on
    none (a refit, once cross-validation has fixed the epoch count). The **test** split is scored
    exactly like serving would (its lists exclude every earlier item).

    With ``holdout_ckpt`` (a two-tower checkpoint trained on ``split.skip_last=2``: everything
    before each user's served val and test), training lists are that model's lists for its own
    test targets, the served model's last training targets: each relates to its model as a test
    list relates to the served one, and the ranker never learns from lists of the model it is
    applied to (``holdout_fraction`` of those users validate it).
    """

    def __init__(
        self,
        retrieval_ckpt: str,
        *,
        num_candidates: int,
        batch_size: int,
        eval_batch_size: int,
        holdout_fraction: float,
        recent_window_days: float,
        last_n: int,
        max_history: int | None,
        features_as_of_request: bool | None,
        seed: int,
        num_workers: int,
        holdout_fold: int,
        holdout_ckpt: str | None,
        attributes: bool,
    ):  # the values live in configs/data/candidates.yaml
        super().__init__()
        if not 0 <= holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        folds = round(1 / holdout_fraction) if holdout_fraction else 1
        if not 0 <= holdout_fold < folds:
            raise ValueError(
                f"holdout_fold must be in [0, {folds}) for holdout_fraction {holdout_fraction}, "
                f"got {holdout_fold}"
            )
        # the ranker checkpoint stores these hyperparameters: CandidateSettings.from_checkpoint
        self.save_hyperparameters()
        self.settings = CandidateSettings(
            num_candidates, last_n, recent_window_days, max_history, bool(features_as_of_request)
        )
        self._as_of_given = features_as_of_request is not None
        self.retrieval_ckpt = Path(retrieval_ckpt)
        self.holdout_ckpt = Path(holdout_ckpt) if holdout_ckpt else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.holdout_fraction = holdout_fraction
        self.holdout_fold = holdout_fold
        self.seed = seed
        self.num_workers = num_workers
        self.retrieval = None
        self.dataset: PreparedDataset | None = None
        self.attributes = attributes  # encode the declared attributes (model.attributes reads them)
        self.attribute_layout = AttributeLayout()
        self.splits: dict[str, CandidateLists] = {}

    def prepare_data(self) -> None:
        if not self.retrieval_ckpt.is_file():
            raise FileNotFoundError(
                f"retrieval_ckpt={self.retrieval_ckpt}: no such checkpoint; train one with "
                "`python -m recsys.train experiment=two_tower` and pass its best checkpoint"
            )
        if self.holdout_ckpt is not None and not self.holdout_ckpt.is_file():
            raise FileNotFoundError(
                f"holdout_ckpt={self.holdout_ckpt}: no such checkpoint; train one with the retrieval "
                "run's overrides plus `split.skip_last=2` and pass its best checkpoint"
            )

    def _load_retrieval(self):
        if self.retrieval is None:
            self.retrieval = TwoTowerModule.load_from_checkpoint(
                self.retrieval_ckpt, map_location="cpu", weights_only=True
            ).eval()
            self.dataset = PreparedDataset.load(self.retrieval.hparams.dataset_dir)
            self.settings = self.settings.with_history_cap(self.dataset)
            if not self._as_of_given:  # the split decides: honest counts wherever time is the protocol
                as_of = self.dataset.manifest.get("split") == "global_temporal"
                self.settings = replace(self.settings, features_as_of_request=as_of)
                self.hparams["features_as_of_request"] = as_of  # the checkpoint stores the resolved value
            # one vocabulary for every list (twin's, test) and the bundle: the served dataset's
            if self.attributes:
                self.attribute_layout = AttributeLayout.from_dataset(self.dataset)
        return self.retrieval

    @property
    def processed_dir(self) -> Path:
        self._load_retrieval()
        return self.dataset.path

    def model_inputs(self) -> dict[str, int | float]:
        """What the ranker is built with from retrieval (known only once that model is loaded)."""
        hp = self._load_retrieval().hparams
        return {
            "embedding_dim": int(hp.dim),
            "retrieval_temperature": float(hp.temperature),
            "attribute_layout": self.attribute_layout.as_dict(),
        }

    @classmethod
    def for_ranker(cls, ranker_ckpt: str | Path, retrieval_ckpt: str | Path) -> CandidateDataModule:
        """The lists a ranker checkpoint was trained on, rebuilt on ``retrieval_ckpt``'s candidates
        (its stored hyperparameters: candidate settings, batches, hold-out)."""
        import torch

        stored = torch.load(ranker_ckpt, map_location="cpu", weights_only=True).get(
            "datamodule_hyper_parameters"
        )
        if not stored:
            raise ValueError(f"{ranker_ckpt}: no candidate settings (datamodule_hyper_parameters) stored")
        values = {**LEGACY_DATAMODULE, **{k: v for k, v in dict(stored).items() if k != "retrieval_ckpt"}}
        return cls(str(retrieval_ckpt), **values)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        model = self._load_retrieval()
        splits = ("test",) if self.holdout_ckpt is not None else ("val", "test")
        built, catalog = model_lists(model, self.dataset, self.settings, splits, self.attribute_layout)
        self.splits = {"test": CandidateLists(built["test"], catalog)}
        lists, list_catalog = (
            self._holdout_lists(model) if self.holdout_ckpt is not None else (built["val"], catalog)
        )
        if not self.holdout_fraction:  # a refit: every list trains
            self.splits["train"] = CandidateLists(lists, list_catalog)
            return
        users = np.random.default_rng(self.seed).permutation(np.unique(lists.user_idx))
        size = max(1, round(len(users) * self.holdout_fraction))
        holdout = users[self.holdout_fold * size : (self.holdout_fold + 1) * size]  # folds: cross-validation
        in_holdout = np.isin(lists.user_idx, holdout)
        self.splits["train"] = CandidateLists(lists.subset(np.flatnonzero(~in_holdout)), list_catalog)
        self.splits["val"] = CandidateLists(lists.subset(np.flatnonzero(in_holdout)), list_catalog)

    def _holdout_lists(self, served: TwoTowerModule) -> tuple[CandidateSet, torch.Tensor]:
        """The holdout model's lists for its test targets, with features from its own dataset
        (counts and transitions known before each target), and the catalog they index."""
        model = TwoTowerModule.load_from_checkpoint(
            self.holdout_ckpt, map_location="cpu", weights_only=True
        ).eval()
        if int(model.hparams.dim) != int(served.hparams.dim):
            raise ValueError(
                f"holdout_ckpt={self.holdout_ckpt} has dim {model.hparams.dim}, the served retrieval "
                f"model {served.hparams.dim}: train both with the same overrides (plus split.skip_last=2)"
            )
        dataset = PreparedDataset.load(model.hparams.dataset_dir)
        if dataset.manifest["config"]["split"].get("skip_last", 0) < SKIP_LAST:
            raise ValueError(
                f"holdout_ckpt={self.holdout_ckpt} was trained on {dataset.path}, which does not skip "
                "the served val and test interactions: train it with split.skip_last=2"
            )
        built, catalog = model_lists(
            model, dataset, self.settings.with_history_cap(dataset), ("test",), self.attribute_layout
        )
        return built["test"], catalog

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.splits:  # a refit: Lightning skips validation on an empty list
            # ... and warns that the list is empty; here that is the intention
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            return []
        return super().val_dataloader()
