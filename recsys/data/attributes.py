"""Item and user attribute tables: side information a data config declares for the ranker.

A data config names, per kind (``item``, ``user``), which columns of its source's attribute
frames to keep and how to read them::

    attributes:
      item: {categorical: [brand], numeric: [price, year]}
      user: {categorical: [gender, occupation], numeric: [age]}

Sources give the frames (``read_item_attributes()``: ``item_id`` + columns;
``read_user_attributes()``: ``user_id`` + columns). The prepared dataset holds one row per catalog
item (``item_attributes.parquet``: ``item_idx`` + the columns) and per user
(``user_attributes.parquet``: ``user_idx`` + the columns), raw values kept: categorical values as
strings (null where absent), numeric ones as floats (NaN where absent or unparseable, counted in the
manifest). Nothing here reads interactions: the tables are metadata, known before any request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.sources.jsonl import DataFormatError

KINDS = ("item", "user")
KEYS = {"item": "item_id", "user": "user_id"}  # the source frames' id column
INDEX_COLUMNS = {"item": "item_idx", "user": "user_idx"}  # the prepared tables' row key
READERS = {"item": "read_item_attributes", "user": "read_user_attributes"}


@dataclass(frozen=True)
class AttributeSpec:
    """The declared columns of one kind, in the order the ranker reads them."""

    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric)

    def __bool__(self) -> bool:
        return bool(self.columns)

    def as_dict(self) -> dict[str, list[str]]:
        return {"categorical": list(self.categorical), "numeric": list(self.numeric)}


def declared_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeSpec]:
    """``{"item": spec, "user": spec}`` from a data config's ``attributes`` (absent kinds: none)."""
    attributes = dict(attributes or {})
    unknown = sorted(set(attributes) - set(KINDS))
    if unknown:
        raise ValueError(f"data.attributes: unknown kind(s) {unknown}; expected {list(KINDS)}")
    specs = {}
    for kind in KINDS:
        block = dict(attributes.get(kind) or {})
        extra = sorted(set(block) - {"categorical", "numeric"})
        if extra:
            raise ValueError(f"data.attributes.{kind}: unknown key(s) {extra}; expected categorical, numeric")
        spec = AttributeSpec(
            tuple(str(c) for c in block.get("categorical") or ()),
            tuple(str(c) for c in block.get("numeric") or ()),
        )
        repeated = sorted({c for c in spec.columns if spec.columns.count(c) > 1})
        if repeated:
            raise ValueError(f"data.attributes.{kind}: column(s) {repeated} declared more than once")
        if KEYS[kind] in spec.columns:
            raise ValueError(f"data.attributes.{kind}: {KEYS[kind]} is the key, not an attribute")
        specs[kind] = spec
    return specs


def source_frame(source: Any, kind: str, spec: AttributeSpec) -> pd.DataFrame:
    """The source's attribute frame of ``kind`` with the declared columns (a clear error when the
    source has no such frame or lacks a column)."""
    reader = getattr(source, READERS[kind], None)
    name = getattr(source, "name", type(source).__name__)
    if reader is None:
        raise DataFormatError(
            f"data.attributes.{kind} declares {list(spec.columns)}, but source {name!r} has no "
            f"{kind} attributes ({READERS[kind]}); remove the declaration"
        )
    frame = reader()
    missing = [c for c in (KEYS[kind], *spec.columns) if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"data.attributes.{kind} declares {missing}, but source {name!r} gives {kind} "
            f"attribute columns {[c for c in frame.columns if c != KEYS[kind]]}"
        )
    return frame


def attribute_table(
    frame: pd.DataFrame, kind: str, spec: AttributeSpec, ids: np.ndarray, index: np.ndarray
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per id in ``ids`` (row key ``index``): the declared columns read from ``frame``, and
    what was absent or unparseable per column. A repeated id keeps its first row (counted)."""
    key = KEYS[kind]
    frame = frame.assign(**{key: frame[key].astype(str).str.strip()})
    repeated = int(frame[key].duplicated().sum())
    wanted = pd.Index(np.asarray(ids).astype(str))
    rows = frame.drop_duplicates(key).set_index(key).reindex(wanted)
    table = pd.DataFrame({INDEX_COLUMNS[kind]: np.asarray(index, dtype=np.int64)})
    stats: dict[str, Any] = {
        "repeated_ids": repeated,
        "ids_without_record": int((~wanted.isin(frame[key])).sum()),
    }
    absent, unparseable = {}, {}
    for column in spec.categorical:
        values = rows[column].astype("string").str.strip()
        values = values.mask(values == "")
        # an object column that keeps None (pandas would turn an assigned array's None into NaN)
        kept = values.to_numpy(dtype=object, na_value=None)
        table[column] = pd.Series(kept, dtype=object, index=table.index)
        absent[column] = int(values.isna().sum())
    for column in spec.numeric:
        raw = rows[column]
        values = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        table[column] = values.to_numpy()
        absent[column] = int(values.isna().sum())
        unparseable[column] = int((values.isna() & raw.notna()).sum())
    stats["absent"] = absent
    if any(unparseable.values()):
        stats["unparseable"] = unparseable
    return table, stats


def attribute_tables(
    source: Any, specs: dict[str, AttributeSpec], items: pd.DataFrame, user_ids: np.ndarray
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The declared tables of a prepared dataset (one row per catalog item of ``items``, per user of
    ``user_ids`` by user_idx) and, per kind, the declared columns with what was absent or unparseable."""
    rows = {
        "item": (items["item_id"].to_numpy(), items["item_idx"].to_numpy()),
        "user": (user_ids, np.arange(len(user_ids))),
    }
    tables, stats = {}, {}
    for kind, spec in specs.items():
        if not spec:
            continue
        frame = source_frame(source, kind, spec)
        tables[kind], counts = attribute_table(frame, kind, spec, *rows[kind])
        stats[kind] = {**spec.as_dict(), **counts}
    return tables, stats
