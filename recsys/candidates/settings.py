"""The settings that define a ranker's candidate lists and features, kept in one place.

A ranker's features mean the same thing only when rebuilt with the settings it was trained
with; they are stored once in the ranker checkpoint (the candidate DataModule's hyperparameters)
and once in the serving bundle's manifest (``candidates``), and read back from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from recsys.features.ranker_features import MS_PER_DAY

# what a ranker checkpoint written before a setting existed meant by its absence
LEGACY = {"max_history": None, "features_as_of_request": False}


@dataclass(frozen=True)
class CandidateSettings:
    """The values live in configs/data/candidates.yaml (a ranker's training) and in the ranker
    checkpoint or the bundle manifest that stored them; no defaults here."""

    num_candidates: int  # K retrieved per user, re-ranked by the ranker
    last_n: int  # recent history items behind the text_similarity feature
    recent_window_days: float  # window of the recent_popularity feature
    max_history: int | None  # history cap of the user tower (None: the dataset's)
    # popularity and transition counts from every interaction strictly before each request
    # (False: train counts and training sequences, the leave-one-out convention)
    features_as_of_request: bool

    def __post_init__(self) -> None:
        if self.num_candidates < 1 or self.last_n < 1 or self.recent_window_days <= 0:
            raise ValueError(f"candidate settings must be positive, got {self}")

    def with_history_cap(self, dataset: Any) -> CandidateSettings:
        """These settings with ``max_history`` resolved: the configured cap, else the prepared
        dataset's (the one place the cap is decided: stage-two lists and the bundle agree)."""
        if self.max_history is not None:
            return self
        return replace(self, max_history=int(dataset.manifest["config"]["max_history"]))

    @property
    def window_ms(self) -> int:
        return int(self.recent_window_days * MS_PER_DAY)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any) -> CandidateSettings:
        """The known keys of ``values`` (a DataModule's hyperparameters or config hold others too;
        they are never read). ``features_as_of_request`` null: the split decides it later."""
        names = [f.name for f in fields(cls)]
        known = {**LEGACY, **{n: values[n] for n in names if n in values}}
        known["features_as_of_request"] = bool(known["features_as_of_request"])
        return cls(**known)

    @classmethod
    def from_checkpoint(cls, ranker_ckpt: str | Path) -> CandidateSettings:
        """The settings a ranker checkpoint was trained with."""
        ckpt = torch.load(ranker_ckpt, map_location="cpu", weights_only=True)
        stored = ckpt.get("datamodule_hyper_parameters")
        if not stored:
            raise ValueError(f"{ranker_ckpt}: no candidate settings (datamodule_hyper_parameters) stored")
        return cls.from_dict(dict(stored))
