"""What every raw-data source hands to the preparer: canonical interaction blocks + an item table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "verified")
ITEM_COLUMNS = ("item_id", "title", "text", "categories")


class InteractionSource(Protocol):
    """A raw dataset.

    ``iter_interactions`` yields DataFrames with ``INTERACTION_COLUMNS`` (ids as strings,
    ``timestamp`` in epoch milliseconds, rows in source order); ``read_items`` returns one row
    per item with metadata (``ITEM_COLUMNS``; ``categories`` already canonical genres).
    ``stats`` holds the counts of records read and skipped, filled while reading.
    """

    name: str
    stats: dict[str, int]

    def iter_interactions(self) -> Iterator[pd.DataFrame]: ...

    def read_items(self) -> pd.DataFrame: ...
