"""Id-only sequence files, the format of the S3-Rec benchmark files and many papers' releases.

Two layouts, plain or gzipped (``.gz``), whitespace-separated ids:

- ``per_user``: one line per user, ``user item item …`` with the items in time order;
- ``pairs``: one line per interaction, ``user item``, each user's lines in time order (users
  may interleave; a user's lines keep their file order).

There are no timestamps: the order in the file is the only time there is. Each interaction's
``timestamp`` is its ordinal within its user's sequence (0, 1, 2, …), and ``time_is_ordinal`` tells
every time-based stage that these numbers order events but measure no duration (the preparer
writes it into the manifest; a global temporal split and time-window features refuse it).

Malformed lines (a user with no item on a ``per_user`` line, a ``pairs`` line without exactly two
fields, a blank line) are counted in ``stats``, never dropped in silence.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.sources.jsonl import DataFormatError

LAYOUTS = ("per_user", "pairs")
_BLOCK_LINES = 200_000  # lines per yielded block: memory stays bounded on large files


def open_text(path: Path):
    """The file as text lines, gunzipped when its name ends in .gz."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass
class SequenceFileSource:
    """``raw_dir/file`` in one of ``LAYOUTS``; items have no metadata (ids only)."""

    raw_dir: str
    file: str
    layout: str = "per_user"
    name: str = "sequences"
    time_is_ordinal: bool = field(default=True, init=False)
    stats: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def path(self) -> Path:
        return Path(self.raw_dir) / self.file

    def iter_interactions(self) -> Iterator[pd.DataFrame]:
        self.stats.update(lines_read=0, malformed_lines=0, interaction_records_read=0)
        users: list[str] = []
        items: list[str] = []
        ordinals: list[int] = []
        next_ordinal: dict[str, int] = {}  # pairs: each user's next position
        with open_text(self.path) as fh:
            for line in fh:
                self.stats["lines_read"] += 1
                fields = line.split()
                if self.layout == "per_user":
                    if len(fields) < 2:
                        self.stats["malformed_lines"] += 1
                        continue
                    n = len(fields) - 1
                    users.extend([fields[0]] * n)
                    items.extend(fields[1:])
                    ordinals.extend(range(n))
                else:
                    if len(fields) != 2:
                        self.stats["malformed_lines"] += 1
                        continue
                    user = fields[0]
                    position = next_ordinal.get(user, 0)
                    next_ordinal[user] = position + 1
                    users.append(user)
                    items.append(fields[1])
                    ordinals.append(position)
                if len(items) >= _BLOCK_LINES:
                    yield self._block(users, items, ordinals)
                    users, items, ordinals = [], [], []
        if items:
            yield self._block(users, items, ordinals)
        if self.stats["interaction_records_read"] == 0:
            raise DataFormatError(
                f"{self.path}: no valid {self.layout} lines "
                f"({'user item item …' if self.layout == 'per_user' else 'user item'}); "
                f"{self.stats['malformed_lines']} malformed of {self.stats['lines_read']} read"
            )

    def _block(self, users: list[str], items: list[str], ordinals: list[int]) -> pd.DataFrame:
        self.stats["interaction_records_read"] += len(items)
        n = len(items)
        return pd.DataFrame(
            {
                "user_id": users,
                "item_id": items,
                "rating": np.full(n, np.nan),
                "timestamp": np.asarray(ordinals, dtype=np.int64),
                "verified": np.ones(n, dtype=bool),
            }
        )

    def read_items(self) -> pd.DataFrame:
        """No metadata: the catalog is the interacted items (the preparer adds them, text empty)."""
        return pd.DataFrame({"item_id": [], "title": [], "text": [], "categories": []}).astype(
            {"item_id": object, "title": object, "text": object}
        )
