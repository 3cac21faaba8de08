"""The declared item and user attributes (``recsys.data.attributes``) as ranker inputs.

A ``AttributeLayout`` fixes what a ranker reads: per kind, each categorical column with its
vocabulary and each numeric column. Categorical values become codes: 0 absent, 1 rare (a value on
fewer than ``MIN_COUNT`` rows of its table, or one outside the vocabulary: an embedding no list
could train), 2.. the vocabulary in sorted order. Numeric values stay raw (NaN absent); the ranker
normalizes them with statistics of its training lists. The vocabulary comes from the served
dataset's tables (metadata, no interaction), so the lists of a holdout twin, the test lists and the
serving bundle all encode a value with the same code.

In the feature tensor the attribute columns follow ``FEATURES``: item codes, item numbers, user
codes, user numbers (``AttributeLayout.names``), one set per (user, candidate) pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.data.attributes import INDEX_COLUMNS, KINDS

MISSING, RARE = 0, 1
MIN_COUNT = 5  # rows of its table a categorical value needs for a code of its own


@dataclass(frozen=True)
class AttributeLayout:
    """Per kind: categorical columns with their vocabularies (code = position + 2), numeric columns."""

    categorical: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    numeric: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    @classmethod
    def from_dataset(cls, dataset: Any) -> AttributeLayout:
        """The layout of a prepared dataset's declared tables (empty when it declares none)."""
        categorical: dict[str, dict[str, list[str]]] = {k: {} for k in KINDS}
        numeric: dict[str, list[str]] = {k: [] for k in KINDS}
        for kind in KINDS:
            found = dataset.attributes(kind)
            if found is None:
                continue
            table, columns = found
            for column in columns["categorical"]:
                counts = table[column].dropna().astype(str).value_counts()
                categorical[kind][column] = sorted(counts.index[counts >= MIN_COUNT])
            numeric[kind] = list(columns["numeric"])
        return cls(categorical, numeric)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AttributeLayout:
        if not values:
            return cls()
        return cls(
            {k: {c: list(v) for c, v in values["categorical"].get(k, {}).items()} for k in KINDS},
            {k: list(values["numeric"].get(k, [])) for k in KINDS},
        )

    def as_dict(self) -> dict[str, Any]:
        return {"categorical": self.categorical, "numeric": self.numeric}

    def vocab_sizes(self, kind: str) -> list[int]:
        return [len(v) + 2 for v in self.categorical[kind].values()]

    @property
    def names(self) -> list[str]:
        """The attribute columns of the feature tensor, in order (``item.<column>``, ``user.<column>``)."""
        return [
            f"{kind}.{column}" for kind in KINDS for column in (*self.categorical[kind], *self.numeric[kind])
        ]

    @property
    def width(self) -> int:
        return len(self.names)


@dataclass
class AttributeTable:
    """One kind's encoded attributes by row (item_idx, or user row): ``codes`` [rows, C] int64,
    ``values`` [rows, N] float32 (NaN absent). A row outside the table reads as absent."""

    codes: torch.Tensor
    values: torch.Tensor
    _rows: torch.Tensor | None = field(default=None, init=False, repr=False)

    @classmethod
    def encode(
        cls,
        frame: pd.DataFrame,
        rows: np.ndarray,
        n_rows: int,
        vocabularies: dict[str, list[str]],
        numeric: list[str],
    ) -> AttributeTable:
        """Rows ``rows`` of a table of ``n_rows`` from ``frame``'s raw values (the rest absent)."""
        rows = np.asarray(rows, dtype=np.int64)
        codes = np.zeros((n_rows, len(vocabularies)), dtype=np.int64)
        for j, (column, vocabulary) in enumerate(vocabularies.items()):
            code = {value: i + 2 for i, value in enumerate(vocabulary)}
            raw = frame[column]
            present = raw.notna().to_numpy()
            codes[rows, j] = [
                code.get(str(v), RARE) if ok else MISSING for v, ok in zip(raw, present, strict=True)
            ]
        values = np.full((n_rows, len(numeric)), np.nan, dtype=np.float32)
        for j, column in enumerate(numeric):
            values[rows, j] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        return cls(torch.from_numpy(codes), torch.from_numpy(values))

    @classmethod
    def encoded(
        cls, frame: pd.DataFrame, rows: np.ndarray, n_rows: int, layout: AttributeLayout, kind: str
    ) -> AttributeTable:
        """From a frame of codes and values as ``to_frame`` wrote it (a serving bundle's table)."""
        categorical, numeric = list(layout.categorical[kind]), layout.numeric[kind]
        codes = np.zeros((n_rows, len(categorical)), dtype=np.int64)
        values = np.full((n_rows, len(numeric)), np.nan, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if categorical:
            codes[rows] = frame[categorical].to_numpy(dtype=np.int64)
        if numeric:
            values[rows] = frame[numeric].to_numpy(dtype=np.float32)
        return cls(torch.from_numpy(codes), torch.from_numpy(values))

    def to_frame(self, rows: np.ndarray, layout: AttributeLayout, kind: str) -> pd.DataFrame:
        """Codes and values of ``rows`` as columns named like the declared ones."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        codes, values = self.codes[rows].numpy(), self.values[rows].numpy()
        frame = {c: codes[:, j] for j, c in enumerate(layout.categorical[kind])}
        frame.update({c: values[:, j] for j, c in enumerate(layout.numeric[kind])})
        return pd.DataFrame(frame)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """[..., C + N] float: codes (as floats) then values of ``rows``; outside the table: absent."""
        n = self.codes.shape[0]
        if self._rows is None:  # the feature columns of every row, and one absent row after them
            absent = torch.cat(
                [torch.zeros(1, self.codes.shape[1]), torch.full((1, self.values.shape[1]), float("nan"))], 1
            )
            self._rows = torch.cat([torch.cat([self.codes.float(), self.values], dim=1), absent])
        rows = torch.where((rows >= 0) & (rows < n), rows, n)
        return self._rows.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)


@dataclass
class Attributes:
    """Both kinds' tables: item rows by item_idx, user rows by user row (user_idx; −1: unknown)."""

    layout: AttributeLayout
    item: AttributeTable
    user: AttributeTable

    @classmethod
    def from_dataset(cls, dataset: Any, layout: AttributeLayout) -> Attributes:
        """A prepared dataset's tables encoded with ``layout``'s vocabularies (another dataset's,
        e.g. the served one for a holdout twin's lists)."""
        sizes = {"item": dataset.n_items + 2, "user": dataset.n_users}
        tables = {}
        for kind in KINDS:
            found = dataset.attributes(kind)
            wanted = [*layout.categorical[kind], *layout.numeric[kind]]
            if found is None and wanted:
                raise ValueError(f"{dataset.path}: no {kind} attribute table, but the ranker reads {wanted}")
            frame = found[0] if found is not None else pd.DataFrame({INDEX_COLUMNS[kind]: []})
            tables[kind] = AttributeTable.encode(
                frame,
                frame[INDEX_COLUMNS[kind]].to_numpy(),
                sizes[kind],
                layout.categorical[kind],
                layout.numeric[kind],
            )
        return cls(layout, tables["item"], tables["user"])

    def values(self, candidates: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[B, K, width] for candidate item_idx [B, K] of users (rows) [B]."""
        item = self.item.gather(candidates)
        user = self.user.gather(torch.as_tensor(users, dtype=torch.long))
        return torch.cat([item, user[:, None, :].expand(-1, candidates.shape[1], -1)], dim=-1)
