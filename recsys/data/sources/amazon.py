"""Amazon review files of any release (2014, 2018, 2023): reviews + metadata JSON lines (.gz),
streamed, each release's fields mapped to our canonical columns (``amazon_formats``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.data.sources.amazon_formats import (
    ATTRIBUTE_COLUMNS,
    FORMAT_CHOICES,
    REVIEW_FORMATS,
    ReviewFormat,
    attributes_from_meta,
    check_format,
    item_from_meta,
    matching_format,
    parse_meta_line,
)
from recsys.data.sources.jsonl import (
    DataFormatError,
    JsonlTableReader,
    LineStats,
    iter_byte_blocks,
    iter_json_objects,
)

_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def first_valid_record(path: Path, scan_lines: int = 1000) -> tuple[int, dict]:
    """(line number, object) of the first line whose JSON object has some release's review fields;
    without one in the first ``scan_lines`` lines, the first object (its line number and fields
    make the error)."""
    import orjson

    line_no, first = 0, None
    for chunk in iter_byte_blocks(path, 1 << 16):
        for line in chunk.splitlines():
            line_no += 1
            try:
                obj = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                if matching_format(obj) is not None:
                    return line_no, obj
                first = first or (line_no, obj)
            if line_no >= scan_lines and first is not None:
                return first
    if first is not None:
        return first
    raise DataFormatError(
        f"{path}: no valid review records (no line of {line_no} is a JSON object); "
        "expected Amazon review JSON lines"
    )


def discover_files(raw_dir: Path) -> tuple[str, str]:
    """(reviews file, metadata file) in ``raw_dir``: the one ``meta_*`` JSON file and the one other."""
    files = sorted(p.name for p in raw_dir.iterdir() if p.is_file() and p.name.endswith(_JSON_SUFFIXES))
    meta = [f for f in files if f.startswith("meta_")]
    reviews = [f for f in files if not f.startswith("meta_")]
    if len(meta) != 1 or len(reviews) != 1:
        raise DataFormatError(
            f"{raw_dir}: cannot tell the reviews file and the metadata file apart (JSON files there: "
            f"{', '.join(files) or 'none'}); expected one meta_*.json(l)(.gz) and one other, or set "
            "data.preparer.source.reviews_file and meta_file"
        )
    return reviews[0], meta[0]


@dataclass
class AmazonReviewsSource:
    """``format``: 2023 | 2018 | 2014 | auto (from the first valid review record). File names of
    null: the one ``meta_*`` file in ``raw_dir`` and the one other JSON file."""

    raw_dir: str
    reviews_file: str | None = "Movies_and_TV.jsonl.gz"
    meta_file: str | None = "meta_Movies_and_TV.jsonl.gz"
    max_description_chars: int = 1000
    block_size: int = 1 << 25
    name: str = "amazon_reviews_2023"
    format: str = "auto"
    stats: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _resolved: ReviewFormat | None = field(default=None, init=False, repr=False)
    _discovered: tuple[str, str] | None = field(default=None, init=False, repr=False)
    # one pass over the metadata file serves both the catalog and the attribute table
    _meta: tuple[pd.DataFrame, pd.DataFrame] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.format = str(self.format)  # data.format=2018 arrives from the command line as an int
        if self.format not in FORMAT_CHOICES:
            raise ValueError(f"data.format must be one of {FORMAT_CHOICES}, got {self.format!r}")

    def _files(self) -> tuple[str, str]:
        if self.reviews_file and self.meta_file:
            return self.reviews_file, self.meta_file
        if self._discovered is None:  # the folder is listed once, not at every path lookup
            self._discovered = discover_files(Path(self.raw_dir))
        found = self._discovered
        return self.reviews_file or found[0], self.meta_file or found[1]

    @property
    def reviews_path(self) -> Path:
        return Path(self.raw_dir) / self._files()[0]

    @property
    def meta_path(self) -> Path:
        return Path(self.raw_dir) / self._files()[1]

    @property
    def review_format(self) -> ReviewFormat:
        """The release read (``format``, or for auto the one the first valid record has)."""
        if self._resolved is None:
            line_no, record = first_valid_record(self.reviews_path)
            name = check_format(record, self.format, f"{self.reviews_path}: line {line_no}")
            self._resolved = REVIEW_FORMATS[name]
        return self._resolved

    @property
    def has_verified(self) -> bool:
        """Whether the release has a verified-purchase flag (2014 has none: the filter cannot apply)."""
        return self.review_format.verified is not None

    @property
    def info(self) -> dict[str, str]:
        return {"format": self.review_format.name, "format_requested": self.format}

    def iter_interactions(self) -> Iterator[pd.DataFrame]:
        fmt = self.review_format
        lines = LineStats()
        reader = JsonlTableReader(fmt.schema, fmt.required, self.block_size)
        for table in reader.iter_tables(self.reviews_path, lines):
            frame = table.to_pandas()
            verified = (
                frame[fmt.verified].fillna(False).to_numpy(dtype=bool)
                if fmt.verified
                else pd.Series(False, index=frame.index).to_numpy()
            )
            yield pd.DataFrame(
                {
                    "user_id": frame[fmt.user],
                    "item_id": frame[fmt.item],
                    "rating": frame[fmt.rating].to_numpy(),
                    "timestamp": frame[fmt.time].to_numpy() * fmt.time_to_ms,
                    "verified": verified,
                }
            )
        self.stats.update(lines.as_dict("reviews_"))
        if lines.records == 0:
            raise DataFormatError(
                f"{self.reviews_path}: no valid review records ({lines.malformed} malformed, "
                f"{lines.blank} blank lines); expected JSON lines with {', '.join(fmt.required)}"
            )

    def _meta_records(self, lines: LineStats) -> Iterator[dict]:
        fmt = self.review_format
        if not fmt.meta_literals:
            yield from iter_json_objects(self.meta_path, lines)
            return
        for chunk in iter_byte_blocks(self.meta_path, 1 << 24):
            for line in chunk.splitlines():
                if not line.strip():
                    lines.blank += 1
                    continue
                try:
                    obj = parse_meta_line(line, literals=True)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    lines.malformed += 1
                    continue
                lines.records += 1
                yield obj

    def read_items(self) -> pd.DataFrame:
        return self._read_meta()[0].copy()  # callers add columns: the cached frame stays as read

    def read_item_attributes(self) -> pd.DataFrame:
        """Brand (2023: store), price as a number, sales rank, main category, rating summary and
        year per catalog item (first record of each id), for a ranker's attribute table."""
        return self._read_meta()[1].copy()

    def _read_meta(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._meta is None:
            self._meta = self._parse_meta()
        return self._meta

    def _parse_meta(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        fmt = self.review_format
        lines = LineStats()
        rows, attributes, seen, duplicates = [], [], set(), 0
        for record in self._meta_records(lines):
            row = item_from_meta(record, fmt, self.max_description_chars)
            if row is None:
                lines.records -= 1
                lines.malformed += 1
            elif row["item_id"] in seen:  # 2018 files repeat lines: the first occurrence wins
                duplicates += 1
            else:
                seen.add(row["item_id"])
                rows.append(row)
                attributes.append(attributes_from_meta(record, fmt))
        self.stats.update(lines.as_dict("meta_"))
        self.stats["meta_duplicate_items"] = duplicates
        if not rows:
            raise DataFormatError(
                f"{self.meta_path}: no valid metadata records ({lines.malformed} malformed, "
                f"{lines.blank} blank lines); expected {'Python-literal or ' if fmt.meta_literals else ''}"
                f"JSON lines with a {fmt.meta_item!r} string"
            )
        return (
            pd.DataFrame(rows, columns=["item_id", "title", "text", "categories"]),
            pd.DataFrame(attributes, columns=list(ATTRIBUTE_COLUMNS)),
        )
