"""Writes a serving bundle (format: ``recsys.serving.bundle``) from plain parts: a prepared
dataset, eval-mode nets, their configs and the candidate settings. No training code: the export
entry point (``recsys.export``) turns checkpoints into these parts.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.progress import track
from safetensors.torch import save_file

from recsys.candidates.settings import CandidateSettings
from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset, item_arrays
from recsys.data.seen_items import SeenItems
from recsys.data.splitting import user_bounds
from recsys.data.text_encoders import encoder_from_key
from recsys.features.attribute_features import AttributeLayout, Attributes
from recsys.features.ranker_features import InteractionTimeline
from recsys.features.transitions import ItemTransitions
from recsys.index.faiss_index import ItemIndex
from recsys.index.score_offsets import index_vectors
from recsys.index.sized_index import SizedIndex
from recsys.models.item_tower import ItemTower
from recsys.models.ranker_net import RankerNet
from recsys.models.user_tower import UserTower
from recsys.serving.bundle import (
    ATTRIBUTE_FILES,
    BUNDLE_FORMAT,
    CANDIDATE_FILES,
    CANDIDATE_LOGITS_FILE,
    STATIC_TEXT_DIR,
    Bundle,
)
from recsys.serving.graph import InferenceGraph
from recsys.serving.known_candidates import KnownCandidates
from recsys.utils.artifacts import atomic_directory, write_manifest


@dataclass
class BundleParts:
    """What a bundle is made of. ``catalog``: eval-mode item vectors of every item_idx row."""

    dataset: PreparedDataset
    catalog: torch.Tensor
    user_tower: UserTower
    item_tower: ItemTower
    user_tower_config: dict[str, Any]  # {"encoder": registry name, "params": {...}, "dim": d}
    item_tower_config: dict[str, Any]  # ItemTower's constructor values but the tables
    settings: CandidateSettings
    ranker: RankerNet | None = None
    ranker_config: dict[str, Any] | None = None  # RankerNet's values, features by name
    retrieval_config: dict[str, Any] | None = None  # {"cold_score_offset": b}; None: no offset


def user_histories(dataset: PreparedDataset, max_history: int) -> pd.DataFrame:
    """Every user's most recent ``max_history`` interactions (any role), oldest first, with times."""
    seq = dataset.interactions(["user_idx", "item_idx", "timestamp"])
    users = seq["user_idx"].to_numpy()
    _, pos, length = user_bounds(users)
    keep = pos >= length - max_history
    users, items, times = users[keep], seq["item_idx"].to_numpy()[keep], seq["timestamp"].to_numpy()[keep]
    n = dataset.n_items + FIRST_ITEM_IDX
    item_ids = dataset.items.set_index("item_idx")["item_id"]
    id_of = np.empty(n, dtype=object)
    id_of[item_ids.index.to_numpy()] = item_ids.to_numpy()
    present, counts = np.unique(users, return_counts=True)
    splits = np.cumsum(counts)[:-1]
    return pd.DataFrame(
        {
            "user_idx": present,
            "user_id": user_ids(dataset)[present],
            "history": [list(x) for x in np.split(id_of[items], splits)],
            "history_idx": np.split(items, splits),  # for export only, not written
            "timestamps": [[int(t) for t in x] for x in np.split(times, splits)],
        }
    )


def user_ids(dataset: PreparedDataset) -> np.ndarray:
    """user_id by user_idx (every user has rows in some split or in the interactions table)."""
    ids = np.empty(dataset.n_users, dtype=object)
    for split in ("train", "val", "test"):
        table = dataset.read_split(split, ["user_idx", "user_id"])
        ids[table["user_idx"].to_numpy()] = table["user_id"].to_numpy(zero_copy_only=False)
    return ids


def all_seen(dataset: PreparedDataset, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, item_idx) of every interaction of the given users, in that order."""
    full = SeenItems.all_interactions(dataset)
    lengths = full.indptr[user_idx + 1] - full.indptr[user_idx]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    _, flat = full.batch(user_idx)
    return indptr.astype(np.int64), np.asarray(flat, dtype=np.int64)


@torch.no_grad()
def encode_histories(
    user_tower: UserTower, histories: list[np.ndarray], catalog: torch.Tensor, batch: int = 1024
) -> np.ndarray:
    """Known users' vectors, computed once at export (the server does not re-encode them)."""
    out = []
    for lo in range(0, len(histories), batch):
        rows = [torch.as_tensor(h, dtype=torch.long) for h in histories[lo : lo + batch]]
        lengths = torch.tensor([len(r) for r in rows])
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        out.append(user_tower(catalog[padded], lengths).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, catalog.shape[1]), np.float32)


def write_bundle(
    path: str | Path,
    parts: BundleParts,
    index: ItemIndex | SizedIndex,
    extra: dict[str, Any] | None = None,
    known_candidates: bool = True,
) -> dict[str, Any]:
    """Build the index over ``parts.catalog`` (a ``SizedIndex`` picks its kind by the catalog's
    size) and write every bundle file atomically; ``known_candidates``: with every known user's
    retrieval candidates (``recsys.serving.known_candidates``) and, with a ranker, its logits of
    them (``rank_known_users``)."""
    dataset, settings = parts.dataset, parts.settings
    settings = settings.with_history_cap(dataset)
    max_history = settings.max_history
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    catalog = parts.catalog[FIRST_ITEM_IDX:].numpy()
    ids = np.arange(FIRST_ITEM_IDX, FIRST_ITEM_IDX + dataset.n_items, dtype=np.int64)
    retrieval = {"cold_score_offset": 0.0, **(parts.retrieval_config or {})}
    items = dataset.items.sort_values("item_idx")
    vectors = index_vectors(catalog, ~items["is_warm"].to_numpy(), retrieval["cold_score_offset"])
    index = index.build(ids, vectors)
    lap("index_build")
    timeline = InteractionTimeline.from_dataset(dataset)
    recent = (  # ordinal time has no window to count in (see candidates.build)
        timeline.counts(items["item_idx"].to_numpy(), timeline.end, settings.window_ms)
        if not dataset.time_is_ordinal
        else np.zeros(len(items))
    )
    age = (  # the ranker's item_age as of "now" (−1: never interacted with; ordinal time: none)
        timeline.age_days(items["item_idx"].to_numpy(), timeline.end)
        if not dataset.time_is_ordinal
        else np.full(len(items), -1.0, dtype=np.float32)
    )
    # what the ranker's log_popularity read in training: every interaction before the request
    # (here: all of them) when features are as of the request, else the train counts
    popularity = (
        timeline.counts(items["item_idx"].to_numpy(), timeline.end, None)
        if settings.features_as_of_request
        else items["train_count"].to_numpy()
    )
    item_table = pd.DataFrame(
        {
            "item_idx": items["item_idx"].to_numpy(),
            "item_id": items["item_id"].to_numpy(),
            "title": items["title"].to_numpy(),
            "categories": items["categories"].to_numpy(),
            "popularity": popularity,
            "recent_popularity": recent,
            "age_days": age,
            "is_warm": items["is_warm"].to_numpy(),
        }
    )
    users = user_histories(dataset, max_history)
    lap("items_and_histories")
    user_vectors = encode_histories(parts.user_tower.eval(), users.pop("history_idx").tolist(), parts.catalog)
    lap("user_vectors")
    seen = SeenItems(*all_seen(dataset, users["user_idx"].to_numpy()))
    candidates = None
    if known_candidates:
        is_cold = ~item_arrays(dataset)["is_warm"]  # per item_idx, as the graph's feature tables
        candidates = KnownCandidates.compute(
            index,
            parts.catalog.float(),
            torch.from_numpy(is_cold.astype(np.float32)),
            retrieval["cold_score_offset"],
            user_vectors,
            seen,
            settings.num_candidates,
        )
        lap("known_candidates")
    info: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "kind": "recsys-bundle",
        "dataset": {"path": str(dataset.path), "source": dataset.manifest.get("source")},
        "text_encoder": dataset.manifest["config"].get("text_encoder"),  # to embed new items' text
        "n_items": int(dataset.n_items),
        "n_users": len(users),
        "embedding_dim": int(catalog.shape[1]),
        "candidates": {**settings.as_dict(), "max_history": max_history},  # the history cap too
        "as_of_ms": timeline.end,
        "index": {"kind": index.kind, "params": index.params()},
        "user_tower": parts.user_tower_config,
        "item_tower": parts.item_tower_config,
        "ranker": parts.ranker_config if parts.ranker is not None else None,
        "retrieval": retrieval,
        "exclude_seen": dataset.exclude_seen,  # false: a user's earlier items may be recommended again
        "known_candidates": {"k": candidates.k} if candidates is not None else None,
        **(extra or {}),
    }
    with atomic_directory(path) as staging:
        pq.write_table(pa.Table.from_pandas(item_table, preserve_index=False), staging / "items.parquet")
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), staging / "users.parquet")
        np.save(staging / "item_embeddings.npy", np.ascontiguousarray(catalog, dtype=np.float32))
        np.save(staging / "text_embeddings.npy", parts.item_tower.text.numpy())
        index.save(staging / "index.faiss")
        np.save(staging / "user_embeddings.npy", user_vectors)
        np.save(staging / "seen_indptr.npy", seen.indptr)
        np.save(staging / "seen_items.npy", seen.indices)
        if candidates is not None:
            for name, array in zip(CANDIDATE_FILES, (candidates.items, candidates.scores), strict=True):
                np.save(staging / name, array)
        transitions = ItemTransitions.from_interactions(dataset).matrix
        for part in ("indptr", "indices", "data"):
            np.save(staging / f"transitions_{part}.npy", getattr(transitions, part))
        save_file(_contiguous(parts.user_tower.state_dict()), staging / "user_tower.safetensors")
        save_file(_contiguous(parts.item_tower.cold_path_state()), staging / "item_tower.safetensors")
        if parts.ranker is not None:
            save_file(_contiguous(parts.ranker.state_dict()), staging / "ranker.safetensors")
        write_attribute_tables(staging, parts, item_table, users)
        copy_static_text_table(info["text_encoder"], parts.item_tower_config, staging / STATIC_TEXT_DIR)
        lap("write_files")
        info["timings"] = timings
        manifest = write_manifest(staging, info)
        if candidates is None or parts.ranker is None:
            return manifest
        np.save(staging / CANDIDATE_LOGITS_FILE, rank_known_users(staging))
        lap("known_user_logits")
        return write_manifest(staging, info)  # hashes the logits with the rest


def rank_known_users(bundle_dir: Path) -> np.ndarray:
    """float32 [n_users, K]: the ranker's logits of every known user's exported candidates, computed
    by the serving graph on the written bundle (the code a request runs, one user at a time as a
    request does, with a worker's one thread, so the stored logits are the ones a request would
    compute); NaN rows for users without history or candidates."""
    threads = torch.get_num_threads()
    # verify=False: this process hashed every file a moment ago; reading them all again buys nothing
    graph = InferenceGraph(Bundle.load(bundle_dir, verify=False), threads=1)
    try:
        known = graph.bundle.candidates
        logits = np.full(known.items.shape, np.nan, dtype=np.float32)
        for row in track(range(len(logits)), description="known users' ranking", transient=True):
            values = graph.known_user_logits(row)
            logits[row, : len(values)] = values
    finally:
        torch.set_num_threads(threads)
    return logits


def write_attribute_tables(
    staging: Path, parts: BundleParts, items: pd.DataFrame, users: pd.DataFrame
) -> None:
    """The attributes the ranker reads, encoded with its vocabularies (``attribute_features``):
    ``item_attributes.parquet`` (item_id, in items.parquet's order) and ``user_attributes.parquet``
    (user_id, in users.parquet's order). None when the ranker reads no attribute."""
    layout = AttributeLayout.from_dict((parts.ranker_config or {}).get("attributes"))
    if parts.ranker is None or not layout.width:
        return
    attributes = Attributes.from_dataset(parts.dataset, layout)
    for kind, table, key, frame in (
        ("item", attributes.item, "item_id", items[["item_id", "item_idx"]]),
        ("user", attributes.user, "user_id", users[["user_id", "user_idx"]]),
    ):
        encoded = table.to_frame(frame[f"{kind}_idx"].to_numpy(), layout, kind)
        encoded.insert(0, key, frame[key].astype(str).to_numpy())
        pq.write_table(pa.Table.from_pandas(encoded, preserve_index=False), staging / ATTRIBUTE_FILES[kind])


def copy_static_text_table(
    text_encoder: dict[str, Any] | None, item_tower: dict[str, Any], to: Path, cache_dir: Path | None = None
) -> None:
    """The static encoder's token table travels with the bundle when the item tower reads text
    (``cache_dir``: where it is cached here; the encoder's default cache when None)."""
    if not text_encoder or text_encoder.get("type") != "StaticTextEncoder" or not item_tower.get("use_text"):
        return
    encoder = encoder_from_key(text_encoder["type"], text_encoder["key"], static_dir=cache_dir)
    encoder.model  # noqa: B018 (the table exists after this: distilled here if no cache has it)
    shutil.copytree(encoder.model_dir, to / encoder.model_dir.name)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}
