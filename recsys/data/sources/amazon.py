"""Amazon Reviews 2023 (McAuley lab) reviews + metadata JSONL(.gz), streamed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recsys.data.cleaning import (
    clean_categories,
    detail_genre,
    extract_details,
    sanitize_text,
    truncate_words,
)
from recsys.data.sources.jsonl import DataFormatError, JsonlTableReader, LineStats, iter_json_objects
from recsys.data.text import unified_text

REVIEW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("parent_asin", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
        ("verified_purchase", pa.bool_()),
    ]
)
REVIEW_REQUIRED = ["user_id", "parent_asin", "rating", "timestamp"]


def item_from_meta(record: dict, max_description_chars: int) -> dict | None:
    """One catalog row from one metadata record; None when it has no usable ``parent_asin``."""
    item_id = record.get("parent_asin")
    if not isinstance(item_id, str) or not item_id.strip():
        return None
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    raw_categories = record.get("categories")
    raw_categories = raw_categories if isinstance(raw_categories, list) else []
    title = sanitize_text(record.get("title"))
    genres = clean_categories(raw_categories, detail_genre(details))
    description = truncate_words(sanitize_text(record.get("description")), max_description_chars)
    return {
        "item_id": item_id.strip(),
        "title": title,
        "text": unified_text(title, genres, extract_details(details), description),
        "categories": genres,
    }


@dataclass
class AmazonReviewsSource:
    raw_dir: str
    reviews_file: str = "Movies_and_TV.jsonl.gz"
    meta_file: str = "meta_Movies_and_TV.jsonl.gz"
    max_description_chars: int = 1000
    block_size: int = 1 << 25
    name: str = "amazon_reviews_2023"
    stats: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def reviews_path(self) -> Path:
        return Path(self.raw_dir) / self.reviews_file

    @property
    def meta_path(self) -> Path:
        return Path(self.raw_dir) / self.meta_file

    def iter_interactions(self) -> Iterator[pd.DataFrame]:
        lines = LineStats()
        reader = JsonlTableReader(REVIEW_SCHEMA, REVIEW_REQUIRED, self.block_size)
        for table in reader.iter_tables(self.reviews_path, lines):
            frame = table.to_pandas()
            yield pd.DataFrame(
                {
                    "user_id": frame["user_id"],
                    "item_id": frame["parent_asin"],
                    "rating": frame["rating"].to_numpy(),
                    "timestamp": frame["timestamp"].to_numpy(),
                    "verified": frame["verified_purchase"].fillna(False).to_numpy(dtype=bool),
                }
            )
        self.stats.update(lines.as_dict("reviews_"))
        if lines.records == 0:
            raise DataFormatError(
                f"{self.reviews_path}: no valid review records ({lines.malformed} malformed, "
                f"{lines.blank} blank lines); expected JSON lines with {', '.join(REVIEW_REQUIRED)}"
            )

    def read_items(self) -> pd.DataFrame:
        lines = LineStats()
        rows, seen, duplicates = [], set(), 0
        for record in iter_json_objects(self.meta_path, lines):
            row = item_from_meta(record, self.max_description_chars)
            if row is None:
                lines.records -= 1
                lines.malformed += 1
            elif row["item_id"] in seen:
                duplicates += 1
            else:
                seen.add(row["item_id"])
                rows.append(row)
        self.stats.update(lines.as_dict("meta_"))
        self.stats["meta_duplicate_items"] = duplicates
        if not rows:
            raise DataFormatError(
                f"{self.meta_path}: no valid metadata records ({lines.malformed} malformed, "
                f"{lines.blank} blank lines); expected JSON lines with a 'parent_asin' string"
            )
        return pd.DataFrame(rows, columns=["item_id", "title", "text", "categories"])
