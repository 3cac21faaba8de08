"""The settings that define a ranker's candidate lists and features, kept in one place.

A ranker's features mean the same thing only when rebuilt with the settings it was trained
with; they are stored once in the ranker checkpoint (the candidate DataModule's hyperparameters)
and once in the serving bundle's manifest (``candidates``), and read back from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class CandidateSettings:
    num_candidates: int = 200  # K retrieved per user, re-ranked by the ranker
    last_n: int = 5  # recent history items behind the text_similarity feature
    recent_window_days: float = 14.0  # window of the recent_popularity feature
    max_history: int | None = None  # history cap of the user tower (None: the dataset's)
    # popularity and transition counts from every interaction strictly before each request
    # (False: train counts and training sequences, the leave-one-out convention; see README)
    features_as_of_request: bool = False

    def __post_init__(self) -> None:
        if self.num_candidates < 1 or self.last_n < 1 or self.recent_window_days <= 0:
            raise ValueError(f"candidate settings must be positive, got {self}")

    @property
    def window_ms(self) -> int:
        return int(self.recent_window_days * MS_PER_DAY)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CandidateSettings:
        """The known keys of ``values`` (a DataModule's hyperparameters hold others too)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_checkpoint(cls, ranker_ckpt: str | Path) -> CandidateSettings:
        """The settings a ranker checkpoint was trained with."""
        ckpt = torch.load(ranker_ckpt, map_location="cpu", weights_only=True)
        stored = ckpt.get("datamodule_hyper_parameters")
        if not stored:
            raise ValueError(f"{ranker_ckpt}: no candidate settings (datamodule_hyper_parameters) stored")
        return cls.from_dict(dict(stored))
