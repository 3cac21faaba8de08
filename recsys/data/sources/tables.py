"""Your own data as two canonical tables (Parquet or CSV): the bring-your-own-data source.

``interactions``: one row per event, columns
    ``user_id``, ``item_id`` (any strings), ``timestamp`` (epoch seconds or milliseconds, or an
    ISO-8601 string), optional ``rating`` (number), optional ``verified`` (bool).
``items``: one row per catalog item, columns
    ``item_id``, ``title``, optional ``categories`` (a list, or a string split on ``|``),
    optional ``description``, optional ``text`` (used as is; else built from the other columns).

Rows are never silently dropped: unparseable rows are counted in ``stats`` (they appear in the
prepared dataset's ``filter_stats``), and a missing column or file is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.sources.jsonl import DataFormatError
from recsys.data.text import unified_text

_SECONDS_BEFORE = 10**11  # epoch values below this are seconds (year 5138 in seconds; 1973 in ms)


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        try:
            return pd.read_csv(
                path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False
            )
        except pd.errors.EmptyDataError:
            raise DataFormatError(
                f"{path}: the file is empty (expected a header row, then one row per record)"
            ) from None
    raise DataFormatError(f"{path}: expected a .parquet, .csv or .tsv file")


def _require(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def to_epoch_ms(values: pd.Series) -> pd.Series:
    """Epoch seconds or milliseconds (numbers or numeric strings) or ISO-8601 strings -> int ms; NaN
    where unparseable."""
    numeric = pd.to_numeric(values, errors="coerce")
    ms = numeric.where(numeric >= _SECONDS_BEFORE, numeric * 1000)
    text = values[numeric.isna()]
    if len(text):
        parsed = pd.to_datetime(text.astype(str), errors="coerce", utc=True, format="ISO8601")
        ms[numeric.isna()] = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return ms


@dataclass
class CanonicalTablesSource:
    raw_dir: str
    interactions: str = "interactions.parquet"
    items: str = "items.parquet"
    name: str = "tables"
    stats: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def iter_interactions(self) -> Iterator[pd.DataFrame]:
        path = Path(self.raw_dir) / self.interactions
        raw = read_table(path)
        _require(raw, path, ("user_id", "item_id", "timestamp"))
        timestamp = to_epoch_ms(raw["timestamp"])
        rating = (
            pd.to_numeric(raw["rating"], errors="coerce") if "rating" in raw else pd.Series(np.nan, raw.index)
        )
        verified = (
            raw["verified"].astype(str).str.lower().isin(("true", "1", "yes"))
            if "verified" in raw
            else pd.Series(True, index=raw.index)
        )
        user, item = raw["user_id"].astype(str).str.strip(), raw["item_id"].astype(str).str.strip()
        ok = timestamp.notna() & (user != "") & (item != "") & raw["user_id"].notna() & raw["item_id"].notna()
        if "rating" in raw:
            ok &= rating.notna()
        self.stats["interaction_records_read"] = int(ok.sum())
        self.stats["interaction_rows_unparseable"] = int((~ok).sum())
        if not ok.any():
            raise DataFormatError(f"{path}: no valid rows (user_id, item_id, timestamp[, rating])")
        yield pd.DataFrame(
            {
                "user_id": user[ok].to_numpy(),
                "item_id": item[ok].to_numpy(),
                "rating": rating[ok].to_numpy(dtype=np.float64),
                "timestamp": timestamp[ok].to_numpy(dtype=np.int64),
                "verified": verified[ok].to_numpy(dtype=bool),
            }
        )

    def read_items(self) -> pd.DataFrame:
        path = Path(self.raw_dir) / self.items
        raw = read_table(path)
        _require(raw, path, ("item_id", "title"))
        raw = raw.drop_duplicates("item_id")
        categories = raw["categories"] if "categories" in raw else pd.Series([[]] * len(raw), index=raw.index)
        categories = categories.map(
            lambda c: [s.strip() for s in c.split("|") if s.strip()] if isinstance(c, str) else list(c)
        )
        titles = raw["title"].fillna("").astype(str)
        if "text" in raw:
            texts = raw["text"].fillna("").astype(str)
        else:
            descriptions = (
                raw["description"].fillna("").astype(str) if "description" in raw else [""] * len(raw)
            )
            texts = [
                unified_text(t, c, {}, d) for t, c, d in zip(titles, categories, descriptions, strict=True)
            ]
        self.stats["item_records_read"] = len(raw)
        return pd.DataFrame(
            {
                "item_id": raw["item_id"].astype(str).str.strip().to_numpy(),
                "title": titles.to_numpy(),
                "text": list(texts),
                "categories": list(categories),
            }
        )
