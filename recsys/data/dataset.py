"""The prepared-dataset directory (format pinned in ARCHITECTURE.md): write once, verify on read."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.utils.artifacts import ManifestError, atomic_directory, read_manifest, write_manifest

PAD_IDX, COLD_IDX, FIRST_ITEM_IDX = 0, 1, 2
SPLITS = ("train", "val", "test")
ITEM_COLUMNS = ("item_idx", "item_id", "title", "text", "categories", "train_count", "is_warm")
ROW_COLUMNS = ("user_id", "user_idx", "history", "target", "timestamp", "position")
# every interaction after the filters, sorted by (user_idx, timestamp), ties in source order; a
# split row's ``position`` is its target's row here. Seen sets, feature counts and serving
# histories are built from this table, so none depends on which interactions are some row's target.
INTERACTIONS_FILE = "interactions.parquet"
INTERACTION_COLUMNS = ("user_idx", "item_idx", "timestamp", "role")
EMBEDDINGS_FILE = "text_embeddings.npy"
# declared side information (recsys.data.attributes): one row per catalog item / per user
ATTRIBUTE_FILES = {"item": "item_attributes.parquet", "user": "user_attributes.parquet"}


class PreparedDataset:
    """Read access to a prepared dataset directory whose manifest has been checked."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> PreparedDataset:
        path = Path(path)
        manifest = read_manifest(path, verify=verify)
        for name in ("items.parquet", *(f"{s}.parquet" for s in SPLITS), INTERACTIONS_FILE, EMBEDDINGS_FILE):
            if name not in manifest["files"]:
                raise ManifestError(f"{path}: manifest lists no {name}; not a prepared dataset")
        return cls(path, manifest)

    @staticmethod
    def write(
        path: str | Path,
        items: pd.DataFrame,
        splits: dict[str, pa.Table],
        interactions: pa.Table,
        text_embeddings: np.ndarray,
        info: dict[str, Any],
        attributes: dict[str, pd.DataFrame] | None = None,
    ) -> PreparedDataset:
        """Write every file into a staging directory, then swap it in (atomic for readers).
        ``attributes``: the declared attribute tables by kind (``recsys.data.attributes``)."""
        missing = [c for c in ITEM_COLUMNS if c not in items.columns]
        if missing:
            raise ValueError(f"items table lacks columns {missing}")
        if text_embeddings.shape[0] != len(items) + FIRST_ITEM_IDX:
            raise ValueError(
                f"text_embeddings has {text_embeddings.shape[0]} rows, "
                f"expected n_items + 2 = {len(items) + 2}"
            )
        with atomic_directory(path) as staging:
            item_table = pa.Table.from_pandas(items[list(ITEM_COLUMNS)], preserve_index=False)
            pq.write_table(item_table, staging / "items.parquet", compression="zstd")
            for name in SPLITS:
                table = splits[name].select(list(ROW_COLUMNS))
                pq.write_table(table, staging / f"{name}.parquet", compression="zstd", row_group_size=1 << 20)
            pq.write_table(
                interactions.select(list(INTERACTION_COLUMNS)),
                staging / INTERACTIONS_FILE,
                compression="zstd",
                row_group_size=1 << 20,
            )
            np.save(staging / EMBEDDINGS_FILE, np.ascontiguousarray(text_embeddings, dtype=np.float32))
            for kind, table in (attributes or {}).items():
                pq.write_table(
                    pa.Table.from_pandas(table, preserve_index=False), staging / ATTRIBUTE_FILES[kind]
                )
            manifest = write_manifest(staging, info)
        return PreparedDataset(path, manifest)

    @cached_property
    def items(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "items.parquet")

    def read_split(self, name: str, columns: list[str] | None = None) -> pa.Table:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return pq.read_table(self.path / f"{name}.parquet", columns=columns)

    def interactions(self, columns: list[str] | None = None) -> pa.Table:
        """Every interaction, sorted by (user_idx, timestamp); ``role`` as in ``recsys.data.splitting``."""
        return pq.read_table(self.path / INTERACTIONS_FILE, columns=columns)

    def attributes(self, kind: str) -> tuple[pd.DataFrame, dict[str, list[str]]] | None:
        """The declared attribute table of ``kind`` (item/user) and its columns by type
        (``{"categorical": [...], "numeric": [...]}``); None when the data config declares none."""
        declared = (self.manifest.get("attributes") or {}).get(kind)
        if not declared:
            return None
        if ATTRIBUTE_FILES[kind] not in self.manifest["files"]:
            raise ManifestError(
                f"{self.path}: manifest declares {kind} attributes but lists no {ATTRIBUTE_FILES[kind]}"
            )
        columns = {"categorical": list(declared["categorical"]), "numeric": list(declared["numeric"])}
        return pd.read_parquet(self.path / ATTRIBUTE_FILES[kind]), columns

    def text_embeddings(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.path / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)

    @property
    def n_items(self) -> int:
        """Catalog size; valid item_idx values are 2 .. n_items + 1."""
        return int(self.manifest["n_catalog_items"])

    @property
    def exclude_seen(self) -> bool:
        """Whether a user's earlier items leave their lists (datasets prepared before the switch: yes)."""
        return bool(self.manifest["config"].get("exclude_seen", True))

    @property
    def time_is_ordinal(self) -> bool:
        """True when timestamps are per-user positions in file order, not clock time."""
        return self.manifest.get("time") == "ordinal"

    @property
    def has_text(self) -> bool:
        """False when no item has text (the text table then has width 0)."""
        return bool(self.manifest.get("has_text", True))

    @property
    def n_users(self) -> int:
        return int(self.manifest["n_users"])

    def n_rows(self, split: str) -> int:
        """Rows (one per user and target) of a split: what a metric over that split averages."""
        return int(self.manifest["n_rows"][split])


def flatten_lists(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column such as ``history``, with no per-row Python."""
    array = column.combine_chunks()
    return pc.list_flatten(array).to_numpy(), pc.list_value_length(array).to_numpy(zero_copy_only=False)


def item_arrays(dataset: PreparedDataset) -> dict[str, np.ndarray]:
    """Per-item_idx arrays (n_items + 2 rows): is_warm and train_count."""
    items = dataset.items
    n = dataset.n_items + FIRST_ITEM_IDX
    is_warm = np.zeros(n, dtype=bool)
    counts = np.zeros(n, dtype=np.int64)
    idx = items["item_idx"].to_numpy()
    is_warm[idx] = items["is_warm"].to_numpy()
    counts[idx] = items["train_count"].to_numpy()
    return {"is_warm": is_warm, "train_count": counts}
