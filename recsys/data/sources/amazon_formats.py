"""The three Amazon review releases (2014, 2018, 2023): their field names, how to tell them apart,
and how one release's metadata record becomes our catalog row and attribute row.

- 2023: reviews ``user_id, parent_asin, rating, timestamp`` (ms), ``verified_purchase``; metadata
  JSON with ``parent_asin, categories, store, price`` (a number), ``average_rating, rating_number``.
- 2018: reviews ``reviewerID, asin, overall, unixReviewTime`` (s), ``verified``; metadata JSON
  (lines repeat) with ``asin, category, brand, price`` (text: ``"$12.99"``), ``rank, main_cat, date``.
- 2014: reviews as 2018 without ``verified``; metadata as Python literals (single quotes) with
  ``asin, categories`` (lists of paths), ``brand, price, salesRank`` (a dict).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from recsys.data.cleaning import (
    clean_categories,
    detail_genre,
    extract_details,
    sanitize_text,
    truncate_words,
)
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.text import unified_text

FORMATS = ("2023", "2018", "2014")
FORMAT_CHOICES = (*FORMATS, "auto")


@dataclass(frozen=True)
class ReviewFormat:
    """One release's review fields and the factor that turns its time into epoch milliseconds."""

    name: str
    user: str
    item: str
    rating: str
    time: str
    time_to_ms: int
    verified: str | None  # None: the release has no verified-purchase flag
    meta_item: str  # the item id field of its metadata
    meta_literals: bool  # metadata lines may be Python literals rather than JSON

    @property
    def required(self) -> list[str]:
        return [self.user, self.item, self.rating, self.time]

    @property
    def schema(self) -> pa.Schema:
        fields = [
            (self.user, pa.string()),
            (self.item, pa.string()),
            (self.rating, pa.float64()),
            (self.time, pa.int64()),
        ]
        return pa.schema(fields + ([(self.verified, pa.bool_())] if self.verified else []))


REVIEW_FORMATS: dict[str, ReviewFormat] = {
    "2023": ReviewFormat(
        "2023", "user_id", "parent_asin", "rating", "timestamp", 1, "verified_purchase", "parent_asin", False
    ),
    "2018": ReviewFormat(
        "2018", "reviewerID", "asin", "overall", "unixReviewTime", 1000, "verified", "asin", False
    ),
    "2014": ReviewFormat("2014", "reviewerID", "asin", "overall", "unixReviewTime", 1000, None, "asin", True),
}


def matching_format(record: dict) -> str | None:
    """The release whose review fields ``record`` has (2018 and 2014 differ by ``verified``)."""
    if all(record.get(f) is not None for f in REVIEW_FORMATS["2023"].required):
        return "2023"
    if all(record.get(f) is not None for f in REVIEW_FORMATS["2018"].required):
        return "2018" if "verified" in record else "2014"
    return None


def check_format(record: dict, wanted: str, where: str) -> str:
    """``wanted`` (or, for ``auto``, the detected release) for the first valid record; a clear error
    naming the place and the missing field when the record fits no release, or not the wanted one."""
    found = matching_format(record)
    fields = ", ".join(sorted(record)) or "none"
    if found is None:
        raise DataFormatError(
            f"{where}: the record fits no Amazon review format (expected 2023 fields user_id, "
            "parent_asin, rating, timestamp or 2018/2014 fields reviewerID, asin, overall, "
            f"unixReviewTime); it has: {fields}"
        )
    if wanted == "auto" or wanted == found or {wanted, found} == {"2018", "2014"}:
        # a 2018 file whose first record lacks `verified` still reads as 2018 when asked to
        return found if wanted == "auto" else wanted
    fmt = REVIEW_FORMATS[wanted]
    missing = [f for f in fmt.required if record.get(f) is None]
    raise DataFormatError(
        f"{where}: data.format={wanted} expects field {missing[0]!r} ({', '.join(fmt.required)}), "
        f"but the record looks like the {found} format (fields: {fields}); set data.format={found} or auto"
    )


def parse_meta_line(line: bytes, literals: bool) -> Any:
    """A JSON object, or with ``literals`` a Python literal (2014 metadata is written with Python's
    repr: single quotes). ``ast.literal_eval`` evaluates literals only, never code."""
    import orjson

    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        if not literals:
            raise
    try:
        return ast.literal_eval(line.decode("utf-8", errors="replace").strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(f"neither JSON nor a Python literal ({type(err).__name__})") from err


_AMOUNT = re.compile(r"^\s*(?:[$€£]|US\$)?\s*(\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?)\s*$")
_RANK = re.compile(r"#?\s*(\d{1,3}(?:,\d{3})+|\d+)\s+in\s")
_YEAR = re.compile(r"\b(18[89]\d|19\d\d|20\d\d)\b")


def parse_price(value: Any) -> float | None:
    """A number, or a single amount written as text (``"$1,299.99"``); None for ranges, blanks, markup."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if value == value and value >= 0 else None
    match = _AMOUNT.match(str(value))
    return float(match.group(1).replace(",", "")) if match else None


def parse_rank(value: Any) -> int | None:
    """The first sales rank: 2018 ``"1,786 in Gift Cards ("`` or a list of such; 2014 ``{"Toys": 12}``."""
    if isinstance(value, dict):
        ranks = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        return int(ranks[0]) if ranks else None
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = _RANK.search(str(value)) if isinstance(value, str) else None
    return int(match.group(1).replace(",", "")) if match else None


def _flat_categories(value: Any) -> list[str]:
    """2023 / 2018 lists of labels, 2014 lists of category paths, flattened in order."""
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for entry in value:
        for label in entry if isinstance(entry, list) else [entry]:
            if isinstance(label, str) and label.strip() and label.strip() not in out:
                out.append(label.strip())
    return out


def item_from_meta(record: dict, fmt: ReviewFormat, max_description_chars: int) -> dict | None:
    """One catalog row (``ITEM_COLUMNS``) from one metadata record; None without a usable id.

    The 2023 row is exactly what the 2023 reader always produced (prepared files stay identical);
    the older releases add their brand and main category to the text's details."""
    item_id = record.get(fmt.meta_item)
    if not isinstance(item_id, str) or not item_id.strip():
        return None
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    title = sanitize_text(record.get("title"))
    if fmt.name == "2023":
        raw_categories = record.get("categories")
        labels = raw_categories if isinstance(raw_categories, list) else []
        extra: dict[str, str] = {}
    else:
        labels = _flat_categories(record.get(_CATEGORY_FIELD[fmt.name]))
        extra = {
            k: v
            for k, v in (
                ("Brand", sanitize_text(record.get("brand"))),
                ("Category", ", ".join(labels[:4])),
            )
            if v
        }
    genres = clean_categories(labels, detail_genre(details))
    description = truncate_words(sanitize_text(record.get("description")), max_description_chars)
    return {
        "item_id": item_id.strip(),
        "title": title,
        "text": unified_text(title, genres, {**extract_details(details), **extra}, description),
        "categories": genres,
    }


ATTRIBUTE_COLUMNS = (
    "item_id",
    "main_category",
    "brand",
    "price",
    "sales_rank",
    "average_rating",
    "rating_count",
    "year",
)
_CATEGORY_FIELD = {"2023": "categories", "2018": "category", "2014": "categories"}


def _number(value: Any, kind: type) -> Any:
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def attributes_from_meta(record: dict, fmt: ReviewFormat) -> dict:
    """The item's side information for a ranker's attribute table, in one schema for every release
    (None where the release or the record lacks it)."""
    labels = _flat_categories(record.get(_CATEGORY_FIELD[fmt.name]))
    main = record.get("main_category" if fmt.name == "2023" else "main_cat")
    main = sanitize_text(main) if isinstance(main, str) and "<" not in main else ""
    brand = record.get("store" if fmt.name == "2023" else "brand")
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    year = extract_details(details).get("Year")
    if year is None and isinstance(record.get("date"), str):
        match = _YEAR.search(record["date"])
        year = match.group(1) if match else None
    return {
        "item_id": str(record.get(fmt.meta_item, "")).strip(),
        "main_category": main or (labels[0] if labels else None),
        "brand": sanitize_text(brand) or None,
        "price": parse_price(record.get("price")),
        "sales_rank": parse_rank(record.get("rank" if fmt.name == "2018" else "salesRank")),
        "average_rating": _number(record.get("average_rating"), float),
        "rating_count": _number(record.get("rating_number"), int),
        "year": int(year) if year else None,
    }
