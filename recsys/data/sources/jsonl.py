"""Streaming newline-delimited JSON (plain or gzip) that survives malformed lines.

The fast path hands whole multi-megabyte blocks to pyarrow's C++ JSON parser (~10x pandas).
A block that fails to parse is bisected until the offending lines are isolated, so one bad
line costs a few extra parses instead of falling back to per-line Python for the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

_GZIP_MAGIC = b"\x1f\x8b"
_BISECT_MIN_LINES = 16
_SUB_BATCH_LINES = 2048


class DataFormatError(ValueError):
    """Raw input cannot be used: missing, unreadable, or without a single valid record."""


@dataclass
class LineStats:
    records: int = 0
    malformed: int = 0
    blank: int = 0

    def as_dict(self, prefix: str) -> dict[str, int]:
        return {
            f"{prefix}records_read": self.records,
            f"{prefix}malformed_lines": self.malformed,
            f"{prefix}blank_lines": self.blank,
        }


def _open(path: Path) -> pa.NativeFile:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw = pa.OSFile(str(path), "rb")
    return pa.CompressedInputStream(raw, "gzip") if magic == _GZIP_MAGIC else raw


def iter_byte_blocks(path: str | Path, block_size: int = 1 << 25) -> Iterator[bytes]:
    """Yield chunks of the (decompressed) file that end on a line boundary."""
    path = Path(path)
    stream = _open(path)
    carry = b""
    try:
        while True:
            try:
                data = stream.read(block_size)
            except OSError as err:
                raise DataFormatError(f"{path}: cannot decompress/read ({err})") from err
            if not data:
                break
            buf = carry + data
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            carry = buf[cut + 1 :]
            yield buf[: cut + 1]
        if carry:
            yield carry
    finally:
        stream.close()


def _count_lines(chunk: bytes) -> int:
    return chunk.count(b"\n") + (0 if not chunk or chunk.endswith(b"\n") else 1)


class JsonlTableReader:
    """Read selected fields of a JSONL file into Arrow tables, block by block."""

    def __init__(self, schema: pa.Schema, required: list[str], block_size: int = 1 << 25):
        self.schema = schema
        self.required = required
        self.block_size = block_size
        self._parse_options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._read_options = pj.ReadOptions(block_size=1 << 24, use_threads=True)

    def _read(self, chunk: bytes) -> pa.Table:
        return pj.read_json(
            pa.BufferReader(chunk), read_options=self._read_options, parse_options=self._parse_options
        )

    def _try_read(self, chunk: bytes) -> pa.Table | None:
        try:
            return self._read(chunk)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None

    def _parse_lines(self, lines: list[bytes]) -> tuple[list[pa.Table], int]:
        """Bisect a list of lines until the unparseable ones are isolated."""
        table = self._try_read(b"\n".join(lines))
        if table is not None:
            return [table], 0
        if len(lines) <= _BISECT_MIN_LINES:
            tables, bad = [], 0
            for line in lines:
                if line.strip():
                    one = self._try_read(line)
                    bad += one is None
                    if one is not None:
                        tables.append(one)
            return tables, bad
        mid = len(lines) // 2
        left, bad_left = self._parse_lines(lines[:mid])
        right, bad_right = self._parse_lines(lines[mid:])
        return left + right, bad_left + bad_right

    def _parse(self, chunk: bytes) -> tuple[list[pa.Table], int]:
        """Parse ``chunk``; return the tables of the good lines and the number of bad lines.

        A failing block is split into lines once and retried in sub-batches; only sub-batches
        that fail are bisected, so a bad line costs a few small parses, not a re-split.
        """
        table = self._try_read(chunk)
        if table is not None:
            return [table], 0
        lines = chunk.split(b"\n")
        tables, bad = [], 0
        for start in range(0, len(lines), _SUB_BATCH_LINES):
            got, n_bad = self._parse_lines(lines[start : start + _SUB_BATCH_LINES])
            tables += got
            bad += n_bad
        return tables, bad

    def _valid_mask(self, table: pa.Table) -> pa.ChunkedArray | None:
        mask = None
        for name in self.required:
            col = table.column(name)
            ok = pc.is_valid(col)
            if pa.types.is_string(col.type):
                ok = pc.and_(ok, pc.greater(pc.utf8_length(pc.fill_null(col, "")), 0))
            mask = ok if mask is None else pc.and_(mask, ok)
        return mask

    def iter_tables(self, path: str | Path, stats: LineStats) -> Iterator[pa.Table]:
        for chunk in iter_byte_blocks(path, self.block_size):
            tables, bad = self._parse(chunk)
            rows = sum(t.num_rows for t in tables)
            if not tables:
                stats.malformed += bad
                stats.blank += max(0, _count_lines(chunk) - bad)
                continue
            table = pa.concat_tables(tables).select(self.schema.names)
            mask = self._valid_mask(table)
            valid = table.filter(mask) if mask is not None else table
            missing_fields = table.num_rows - valid.num_rows
            stats.records += valid.num_rows
            stats.malformed += bad + missing_fields
            stats.blank += max(0, _count_lines(chunk) - rows - bad)
            if valid.num_rows:
                yield valid


def iter_json_objects(path: str | Path, stats: LineStats, block_size: int = 1 << 24) -> Iterator[dict]:
    """Yield each line that parses to a JSON object; count malformed and blank lines.

    Used for records whose schema varies per line (Amazon metadata ``details``), where a fixed
    Arrow schema does not fit.
    """
    for chunk in iter_byte_blocks(path, block_size):
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()  # the empty string after the final newline is not a line
        for line in lines:
            if not line.strip():
                stats.blank += 1
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                stats.malformed += 1
                continue
            if not isinstance(obj, dict):
                stats.malformed += 1
                continue
            stats.records += 1
            yield obj
