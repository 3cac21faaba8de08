"""Raw source -> prepared dataset directory: filter, split, index, embed text, write atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.data.attributes import attribute_tables, declared_attributes
from recsys.data.cold_items import ColdItemHoldout
from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset
from recsys.data.filtering import InteractionFilters, apply_pair_filters
from recsys.data.sources.base import InteractionSource
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.splitting import (
    HELD_OUT,
    HISTORY_ONLY,
    TEST,
    TRAIN,
    VAL,
    LeaveOneOutSplitter,
    history_rows,
    sequence_order,
)
from recsys.data.text_embeddings import TextEncoder, embed_texts
from recsys.utils.artifacts import ManifestError, exclusive_lock, read_manifest

log = logging.getLogger(__name__)

# bumped when the prepared directory's layout changes: older directories are prepared again
PREPARED_FORMAT = 2  # 2: interactions.parquet and the rows' ``position``


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux VmHWM), in GiB; 0 where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024**2, 3)
    except OSError:
        pass
    return 0.0


def _describe(component: Any) -> dict[str, Any]:
    fields = asdict(component) if is_dataclass(component) else dict(vars(component))
    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k != "stats"}
    return {"type": f"{type(component).__module__}.{type(component).__qualname__}", **fields}


class IdEncoder:
    """Incremental string -> dense int code map, fed block by block (codes in first-seen order)."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}

    def encode(self, values: pd.Series) -> np.ndarray:
        codes, uniques = pd.factorize(values)  # block-local, in C
        index = self._index
        mapping = np.fromiter(
            (index.setdefault(u, len(index)) for u in uniques.tolist()), dtype=np.int64, count=len(uniques)
        )
        return mapping[codes].astype(np.int32)

    def ids(self) -> np.ndarray:
        return np.array(list(self._index), dtype=object)


def index_items(catalog_ids: np.ndarray, warm_ids: set[str]) -> np.ndarray:
    """item_idx for each catalog id: warm items first (2, 3, …), then the rest, each by id.

    Putting warm items first keeps the trained ID rows contiguous; models still use the
    explicit warm lookup, so any order would be correct.
    """
    ids = pd.Series(catalog_ids, dtype=object)
    warm = ids.isin(warm_ids).to_numpy()
    order = np.lexsort((ids.to_numpy(dtype=str), ~warm))
    idx = np.empty(len(ids), dtype=np.int64)
    idx[order] = np.arange(FIRST_ITEM_IDX, FIRST_ITEM_IDX + len(ids))
    return idx


class DatasetPreparer:
    """Turns one raw source into the prepared-dataset directory that training reads."""

    def __init__(
        self,
        source: InteractionSource,
        processed_dir: str,
        text_encoder: TextEncoder,
        filters: InteractionFilters | None = None,
        splitter: Any = None,
        max_history: int = 100,
        embedding_cache_dir: str | None = None,
        progress: bool = True,
        cold_items: ColdItemHoldout | None = None,
        exclude_seen: bool = True,
        attributes: Mapping[str, Any] | None = None,
    ):
        self.source = source
        self.processed_dir = Path(processed_dir)
        self.text_encoder = text_encoder
        self.filters = filters or InteractionFilters()
        self.splitter = splitter or LeaveOneOutSplitter()
        self.max_history = max_history
        self.embedding_cache_dir = embedding_cache_dir
        self.progress = progress
        self.cold_items = cold_items
        # whether a user's earlier items are excluded from their lists (evaluation, candidates,
        # serving); false where users revisit items (e.g. Yelp businesses)
        self.exclude_seen = exclude_seen
        # the item and user attribute tables the data config declares (recsys.data.attributes)
        self.attributes = declared_attributes(attributes)

    def config(self) -> dict[str, Any]:
        return {
            "format": PREPARED_FORMAT,
            "source": _describe(self.source),
            "filters": _describe(self.filters),
            "split": _describe(self.splitter),
            "text_encoder": {"type": type(self.text_encoder).__name__, "key": self.text_encoder.cache_key},
            "max_history": self.max_history,
            "exclude_seen": self.exclude_seen,
            **({"cold_items": _describe(self.cold_items)} if self.cold_items is not None else {}),
            # only when declared: datasets without attributes keep their fingerprint
            **({"attributes": self._declared()} if self._declared() else {}),
        }

    def _declared(self) -> dict[str, dict[str, list[str]]]:
        return {kind: spec.as_dict() for kind, spec in self.attributes.items() if spec}

    def row_filters(self) -> InteractionFilters:
        """The filters as they apply to this source: a verified-purchase rule is skipped (and the
        manifest says so) for a source without the flag (Amazon 2014). Asked once reading began,
        when the source knows its format."""
        if self.filters.require_verified and not getattr(self.source, "has_verified", True):
            return replace(self.filters, require_verified=False)
        return self.filters

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()

    def is_current(self) -> bool:
        """True when ``processed_dir`` is complete and was prepared with this exact config."""
        try:
            manifest = read_manifest(self.processed_dir, verify=False)
        except ManifestError:
            return False
        return manifest.get("config_fingerprint") == self.fingerprint()

    def ensure(self) -> PreparedDataset:
        """Prepare unless an up-to-date dataset is already there. Runs started together (a
        benchmark's parallel seeds) take turns: the first prepares, the others find it current."""
        lock = self.processed_dir.with_name(f".{self.processed_dir.name}.lock")
        with exclusive_lock(lock):
            if self.is_current():
                return PreparedDataset.load(self.processed_dir, verify=False)
            if (self.processed_dir / "manifest.json").exists():
                log.warning("%s was prepared with a different config; preparing again", self.processed_dir)
            return self.run()

    def _read_interactions(
        self, stats: Counter
    ) -> tuple[IdEncoder, IdEncoder, np.ndarray, np.ndarray, np.ndarray]:
        """Stream blocks through the row filters, keeping only integer codes and timestamps.

        Memory grows with the number of distinct users/items, not with the number of rows.
        """
        users, items = IdEncoder(), IdEncoder()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for block in self.source.iter_interactions():
            block = self.row_filters().apply_row_filters(block, stats)
            if len(block):
                parts.append(
                    (
                        users.encode(block["user_id"]),
                        items.encode(block["item_id"]),
                        block["timestamp"].to_numpy(dtype=np.int64),
                    )
                )
        if not parts:
            raise DataFormatError(
                f"{self.source.name}: no interactions survive the row filters {self.filters}"
            )
        user_codes, item_codes, timestamps = (np.concatenate(col) for col in zip(*parts, strict=True))
        return users, items, user_codes, item_codes, timestamps

    def run(self) -> PreparedDataset:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        peak_rss: dict[str, float] = {}
        clock = [t0]

        def lap(name: str) -> None:
            now = time.perf_counter()
            timings[name] = round(now - clock[0], 3)
            peak_rss[name] = peak_rss_gib()
            clock[0] = now

        stats: Counter = Counter()
        user_enc, item_enc, user_codes, item_codes, timestamps = self._read_interactions(stats)
        user_ids, item_ids = user_enc.ids(), item_enc.ids()
        del user_enc, item_enc
        lap("read_interactions")
        keep = apply_pair_filters(user_codes, item_codes, timestamps, self.filters, stats)
        user_codes, item_codes, timestamps = user_codes[keep], item_codes[keep], timestamps[keep]
        if len(user_codes) == 0:
            raise DataFormatError(f"{self.source.name}: no interactions survive the filters {self.filters}")
        # Re-code users densely over the survivors, ordered by id string: user_idx does not
        # depend on file order.
        used_users, dense = np.unique(user_codes, return_inverse=True)
        by_id = np.argsort(user_ids[used_users].astype(str), kind="stable")
        rank = np.empty_like(by_id)
        rank[by_id] = np.arange(len(by_id))
        user_idx = rank[dense]
        user_ids = user_ids[used_users][by_id]

        time_is_ordinal = bool(getattr(self.source, "time_is_ordinal", False))
        if time_is_ordinal and getattr(self.splitter, "needs_clock_time", False):
            raise DataFormatError(
                f"{self.source.name}: split={self.splitter.name} cuts one global timeline, but this "
                "source has no timestamps (its times are each user's ordinals: the order in the file); "
                "use split=leave_one_out"
            )
        order = sequence_order(user_idx, timestamps)
        s_users, s_items, s_ts = user_idx[order], item_codes[order], timestamps[order]
        role = self.splitter.assign(s_users, s_ts)
        # rows that may build training rows (all, unless a cold-item holdout keeps some items out)
        trainable = (
            self.cold_items.training_mask(s_items, role, stats)
            if self.cold_items is not None
            else np.ones(len(role), dtype=bool)
        )
        train_role = np.where(trainable, role, HISTORY_ONLY)  # what the catalog's train counts see
        lap("filter_and_split")

        items = self._catalog(item_ids, s_items, train_role, stats)
        lap("read_items")
        code_to_idx = np.full(len(item_ids), -1, dtype=np.int64)
        position = pd.Index(item_ids).get_indexer(items["item_id"].to_numpy())
        has_code = position >= 0  # metadata-only items never occur in interactions
        code_to_idx[position[has_code]] = items["item_idx"].to_numpy()[has_code]
        s_items = code_to_idx[s_items]
        # interactions with items left out of the catalog (no metadata, no training interaction)
        in_catalog = s_items >= 0
        stats["dropped_interactions_uncatalogued_items"] = int((~in_catalog).sum())
        stats["dropped_eval_targets_uncatalogued_items"] = int((~in_catalog & (role >= VAL)).sum())
        s_users, s_items, s_ts = s_users[in_catalog], s_items[in_catalog], s_ts[in_catalog]
        role, trainable = role[in_catalog], trainable[in_catalog]
        role = np.where(trainable | (role >= VAL), role, HELD_OUT).astype(np.int8)

        splits = {}
        for name, label in (("train", TRAIN), ("val", VAL), ("test", TEST)):
            rows = np.flatnonzero(trainable) if label == TRAIN else np.arange(len(role))
            columns = history_rows(
                s_users[rows],
                s_items[rows],
                s_ts[rows],
                np.flatnonzero(role[rows] == label),
                self.max_history,
                positions=rows,  # held-out items never feed training rows
            )
            columns["user_id"] = pa.chunked_array(
                [pa.array(user_ids[chunk.to_numpy()].astype(str)) for chunk in columns["user_idx"].chunks],
                type=pa.string(),
            )
            splits[name] = pa.table(columns)
        interactions = pa.table(
            {
                "user_idx": pa.array(s_users.astype(np.int32)),
                "item_idx": pa.array(s_items.astype(np.int32)),
                "timestamp": pa.array(s_ts.astype(np.int64)),
                "role": pa.array(role),
            }
        )
        lap("build_rows")

        texts = items.sort_values("item_idx")["text"].tolist()
        has_text = any(t.strip() for t in texts)
        if has_text:
            emb, emb_stats = embed_texts(
                texts, self.text_encoder, self.embedding_cache_dir, progress=self.progress
            )
        else:  # no zero rows posing as text: a width-0 table, and models switch their text path off
            log.warning("%s: no item has text; the text path is off for this dataset", self.source.name)
            emb, emb_stats = np.zeros((len(texts), 0), dtype=np.float32), {"skipped": "no item text"}
        text_embeddings = np.zeros((len(items) + FIRST_ITEM_IDX, emb.shape[1]), dtype=np.float32)
        text_embeddings[FIRST_ITEM_IDX:] = emb
        lap("text_embeddings")

        attributes, attribute_stats = attribute_tables(self.source, self.attributes, items, user_ids)
        lap("attributes")

        info = {
            "source": self.source.name,
            "config": self.config(),
            "config_fingerprint": self.fingerprint(),
            "n_users": len(user_ids),
            "split": self.splitter.name,
            # "ordinal": timestamps are each user's positions in file order (no clock time)
            "time": "ordinal" if time_is_ordinal else "epoch_ms",
            "has_text": has_text,
            **({"attributes": attribute_stats} if attribute_stats else {}),
            "n_items_interacted": int(np.unique(s_items).size),
            "n_catalog_items": len(items),
            "n_warm_items": int(items["is_warm"].sum()),
            "n_interactions": len(s_items),
            "n_rows": {name: table.num_rows for name, table in splits.items()},
            "filter_stats": {**dict(sorted(stats.items())), **dict(sorted(self.source.stats.items()))},
            **self._filters_report(),
            **({"source_info": dict(self.source.info)} if hasattr(self.source, "info") else {}),
            # the resolved precision (text_encoder.precision=auto picks bf16 only where native)
            "text_embeddings": {
                "dim": int(emb.shape[1]),
                "precision": getattr(self.text_encoder, "precision", "fp32") if has_text else None,
                **emb_stats,
            },
            "timings": timings,
            "peak_rss_gib_after": peak_rss,
        }
        dataset = PreparedDataset.write(
            self.processed_dir, items, splits, interactions, text_embeddings, info, attributes
        )
        lap("write")
        dataset.manifest["timings"] = timings  # the write time is known only after the manifest
        log.info("prepared %s in %.1fs", self.processed_dir, time.perf_counter() - t0)
        return dataset

    def _filters_report(self) -> dict[str, Any]:
        """The filters as applied, and any the source could not honour (with why)."""
        applied = self.row_filters()
        skipped = {
            name: "the source has no verified-purchase flag"
            for name in ("require_verified",)
            if getattr(self.filters, name) != getattr(applied, name)
        }
        return {"filters_applied": _describe(applied), **({"filters_skipped": skipped} if skipped else {})}

    def _catalog(
        self, item_ids: np.ndarray, s_items: np.ndarray, role: np.ndarray, stats: Counter
    ) -> pd.DataFrame:
        """Every item with metadata plus every interacted item with a training interaction.

        An interacted item without metadata whose only interactions are val/test targets (or
        history-only / held out) is left out, with those interactions: it would enter the
        catalog only because it is some user's evaluation target (a leak a ranker reading
        ``is_cold`` and empty text could learn), and nothing could represent it anyway.
        """
        meta = self.source.read_items()
        interacted = item_ids[np.unique(s_items)]
        missing_meta = pd.Index(interacted).difference(pd.Index(meta["item_id"]))
        stats["interacted_items_without_metadata"] = len(missing_meta)
        stats["interacted_items_with_metadata"] = len(interacted) - len(missing_meta)
        trained = pd.Index(item_ids[np.unique(s_items[role == TRAIN])])
        untrained = missing_meta.difference(trained)
        stats["dropped_items_without_metadata_or_training"] = len(untrained)
        missing_meta = missing_meta.intersection(trained)
        if len(missing_meta):
            meta = pd.concat(
                [
                    meta,
                    pd.DataFrame(
                        {
                            "item_id": missing_meta.to_numpy(),
                            "title": "",
                            "text": "",
                            "categories": [[] for _ in range(len(missing_meta))],
                        }
                    ),
                ],
                ignore_index=True,
            )
        train_counts = np.bincount(s_items[role == TRAIN], minlength=len(item_ids))
        counts = pd.Series(train_counts, index=pd.Index(item_ids)).reindex(meta["item_id"]).fillna(0)
        meta["train_count"] = counts.to_numpy(dtype=np.int64)
        meta["is_warm"] = meta["train_count"] > 0
        meta["item_idx"] = index_items(meta["item_id"].to_numpy(), set(meta.loc[meta["is_warm"], "item_id"]))
        return meta.sort_values("item_idx").reset_index(drop=True)
