"""The serving bundle: plain exported artifacts the inference graph loads (never checkpoints).

Files (every one hashed in ``manifest.json``, verified on load):
- ``items.parquet``: item_idx, item_id, title, categories, popularity (train interactions),
  recent_popularity (interactions in the ranker's window before the end of the data), is_warm
- ``users.parquet``: user_id, history (item_id strings, oldest first, capped at max_history),
  timestamps (ms; null for a user's first item, whose time the prepared dataset does not keep)
- ``item_embeddings.npy``: float32 [n_items, d], row i = items.parquet row i (item_idx = i + 2)
- ``user_embeddings.npy``: float32 [n_users, d], known users' vectors (row = users.parquet row)
- ``text_embeddings.npy``: float32 [n_items + 2, text_dim] (ranker text feature, cold path)
- ``index.faiss`` + ``index.faiss.json``: the ANN index over item_idx ids
- ``transitions_{indptr,indices,data}.npy``: CSR item -> next-item counts (ranker feature)
- ``seen_{indptr,items}.npy``: CSR of every item_idx each user (users.parquet row) interacted
  with, uncapped, so known users are never recommended something they already have
- ``user_tower.safetensors``, ``item_tower.safetensors`` (cold path only: no ID table),
  ``ranker.safetensors`` (optional); their constructor configs live in the manifest
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recsys.data.dataset import FIRST_ITEM_IDX, PreparedDataset, flatten_lists
from recsys.data.splitting import offsets_from_lengths
from recsys.evaluation.retrieval import SeenItems
from recsys.features.ranker_features import InteractionTimeline, ItemTransitions
from recsys.index.faiss_index import ItemIndex
from recsys.models.item_tower import ItemTower
from recsys.models.ranker import RankerNet
from recsys.models.user_tower import UserTower
from recsys.utils.artifacts import ManifestError, atomic_directory, read_manifest, write_manifest

BUNDLE_FORMAT = 1
REQUIRED_FILES = (
    "items.parquet",
    "user_embeddings.npy",
    "users.parquet",
    "item_embeddings.npy",
    "text_embeddings.npy",
    "index.faiss",
    "index.faiss.json",
    "user_tower.safetensors",
    "item_tower.safetensors",
    "transitions_indptr.npy",
    "transitions_indices.npy",
    "transitions_data.npy",
    "seen_indptr.npy",
    "seen_items.npy",
)


def _safe_target(config: dict[str, Any], where: str) -> dict[str, Any]:
    """A bundle names the classes to rebuild; only recsys's own may be instantiated from it."""
    target = str(config.get("_target_", ""))
    if not target.startswith("recsys."):
        raise ManifestError(f"{where}: refusing to instantiate {target!r} (only recsys.* targets)")
    return config


def user_histories(dataset: PreparedDataset, max_history: int) -> pd.DataFrame:
    """Each user's most recent items (all interactions up to the test target), with times."""
    test = dataset.read_split("test", ["user_id", "user_idx", "history", "target", "timestamp"])
    values, lengths = flatten_lists(test["history"])
    users = test["user_idx"].to_numpy()
    offsets = offsets_from_lengths(lengths)
    # the full sequence = history + test target; keep the last max_history of it
    seq_users = np.concatenate([np.repeat(users, lengths), users])
    seq_items = np.concatenate([values, test["target"].to_numpy()])
    seq_pos = np.concatenate([np.arange(len(values)) - np.repeat(offsets[:-1], lengths), lengths])
    order = np.lexsort((seq_pos, seq_users))
    seq_users, seq_items, seq_pos = seq_users[order], seq_items[order], seq_pos[order]
    total = np.bincount(seq_users, minlength=dataset.n_users)
    keep = seq_pos >= (total[seq_users] - max_history)
    seq_users, seq_items = seq_users[keep], seq_items[keep]
    # times: every timed interaction is some row's target
    n = dataset.n_items + FIRST_ITEM_IDX
    keys, times = [], []
    for split in ("train", "val", "test"):
        t = dataset.read_split(split, ["user_idx", "target", "timestamp"])
        keys.append(t["user_idx"].to_numpy().astype(np.int64) * n + t["target"].to_numpy())
        times.append(t["timestamp"].to_numpy())
    keys, times = np.concatenate(keys), np.concatenate(times)
    by_key = np.argsort(keys)
    query = seq_users.astype(np.int64) * n + seq_items
    pos = np.clip(np.searchsorted(keys, query, sorter=by_key), 0, len(keys) - 1)
    found = keys[by_key[pos]] == query
    seq_times = np.where(found, times[by_key[pos]], -1)
    item_ids = dataset.items.set_index("item_idx")["item_id"]
    id_of = np.empty(n, dtype=object)
    id_of[item_ids.index.to_numpy()] = item_ids.to_numpy()
    present, counts = np.unique(seq_users, return_counts=True)  # = the test users, sorted
    splits = np.cumsum(counts)[:-1]
    user_ids = pd.Series(test["user_id"].to_numpy(zero_copy_only=False), index=users)
    return pd.DataFrame(
        {
            "user_idx": present,
            "user_id": user_ids.loc[present].to_numpy(),
            "history": [list(x) for x in np.split(id_of[seq_items], splits)],
            "history_idx": np.split(seq_items, splits),  # for export only, not written
            "timestamps": [[int(t) if t >= 0 else None for t in x] for x in np.split(seq_times, splits)],
        }
    )


def all_seen(dataset: PreparedDataset, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, item_idx) of every interaction of the given users, in that order."""
    seen = SeenItems.for_split(dataset, "test")  # everything up to and including test histories
    test = dataset.read_split("test", ["user_idx", "target"])
    users = np.concatenate(
        [np.repeat(np.arange(dataset.n_users), np.diff(seen.indptr)), test["user_idx"].to_numpy()]
    )
    items = np.concatenate([seen.indices, test["target"].to_numpy()])
    full = SeenItems.from_pairs(users, items, dataset.n_users)
    lengths = full.indptr[user_idx + 1] - full.indptr[user_idx]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    _, flat = full.batch(user_idx)
    return indptr.astype(np.int64), np.asarray(flat, dtype=np.int64)


@torch.no_grad()
def encode_histories(
    retrieval, histories: list[np.ndarray], catalog: torch.Tensor, batch: int = 1024
) -> np.ndarray:
    """Known users' vectors, computed once at export (the server does not re-encode them)."""
    out = []
    for lo in range(0, len(histories), batch):
        rows = [torch.as_tensor(h, dtype=torch.long) for h in histories[lo : lo + batch]]
        lengths = torch.tensor([len(r) for r in rows])
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        out.append(retrieval.user_tower(catalog[padded], lengths).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, catalog.shape[1]), np.float32)


def write_bundle(
    path: str | Path,
    retrieval,
    index: ItemIndex,
    ranker=None,
    max_history: int | None = None,
    recent_window_days: float = 14.0,
    last_n: int = 5,
    num_candidates: int = 200,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a trained ``TwoTowerModule`` (+ optional ``RankerModule``) into a bundle directory."""
    retrieval.eval()
    dataset: PreparedDataset = retrieval._dataset
    hp = retrieval.hparams
    max_history = int(max_history or dataset.manifest["config"].get("max_history") or 50)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    full_catalog = retrieval.encode_catalog()
    catalog = full_catalog[FIRST_ITEM_IDX:].numpy()
    lap("encode_catalog")
    ids = np.arange(FIRST_ITEM_IDX, FIRST_ITEM_IDX + dataset.n_items, dtype=np.int64)
    index.build(ids, catalog)
    lap("index_build")
    timeline = InteractionTimeline.from_dataset(dataset, ("train", "val", "test"))
    window_ms = int(recent_window_days * 86_400_000)
    items = dataset.items.sort_values("item_idx")
    item_table = pd.DataFrame(
        {
            "item_idx": items["item_idx"].to_numpy(),
            "item_id": items["item_id"].to_numpy(),
            "title": items["title"].to_numpy(),
            "categories": items["categories"].to_numpy(),
            "popularity": items["train_count"].to_numpy(),
            "recent_popularity": timeline.counts(items["item_idx"].to_numpy(), timeline.end, window_ms),
            "is_warm": items["is_warm"].to_numpy(),
        }
    )
    users = user_histories(dataset, max_history)
    lap("items_and_histories")
    user_vectors = encode_histories(retrieval, users.pop("history_idx").tolist(), full_catalog)
    lap("user_vectors")
    info: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "kind": "recsys-bundle",
        "dataset": {"path": str(dataset.path), "source": dataset.manifest.get("source")},
        "text_encoder": dataset.manifest["config"].get("text_encoder"),  # to embed new items' text
        "n_items": int(dataset.n_items),
        "n_users": len(users),
        "embedding_dim": int(hp.dim),
        "max_history": max_history,
        "num_candidates": int(num_candidates),
        "recent_window_days": float(recent_window_days),
        "as_of_ms": timeline.end,
        "last_n": int(last_n),
        "index": {"kind": index.kind, "params": index.params()},
        "user_tower": {"encoder": dict(hp.user_encoder), "dim": int(hp.dim)},
        "item_tower": {
            "dim": int(hp.dim),
            "use_text": bool(hp.use_text),
            "use_id": bool(hp.use_id),
            "fusion": str(hp.fusion),
            "text_dim": int(retrieval.item_tower.text.shape[1]),
        },
        "ranker": None,
        **(extra or {}),
    }
    with atomic_directory(path) as staging:
        pq.write_table(pa.Table.from_pandas(item_table, preserve_index=False), staging / "items.parquet")
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), staging / "users.parquet")
        np.save(staging / "item_embeddings.npy", np.ascontiguousarray(catalog, dtype=np.float32))
        np.save(staging / "text_embeddings.npy", retrieval.item_tower.text.numpy())
        index.save(staging / "index.faiss")
        np.save(staging / "user_embeddings.npy", user_vectors)
        seen_indptr, seen_items = all_seen(dataset, users["user_idx"].to_numpy())
        np.save(staging / "seen_indptr.npy", seen_indptr)
        np.save(staging / "seen_items.npy", seen_items)
        transitions = ItemTransitions.from_dataset(dataset, ("train", "val", "test")).matrix
        for part in ("indptr", "indices", "data"):
            np.save(staging / f"transitions_{part}.npy", getattr(transitions, part))
        save_file(_contiguous(retrieval.user_tower.state_dict()), staging / "user_tower.safetensors")
        save_file(_contiguous(retrieval.item_tower.cold_path_state()), staging / "item_tower.safetensors")
        if ranker is not None:
            rh = ranker.hparams
            info["ranker"] = {
                "embedding_dim": int(rh.embedding_dim),
                "features": list(rh.features),
                "use_embeddings": bool(rh.use_embeddings),
                "hidden": list(rh.hidden),
                "dropout": float(rh.dropout),
            }
            save_file(_contiguous(ranker.net.state_dict()), staging / "ranker.safetensors")
        lap("write_files")
        info["timings"] = timings
        manifest = write_manifest(staging, info)
    return manifest


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


@dataclass
class Bundle:
    """A loaded, verified bundle: tables, arrays, the index and eval-mode modules."""

    path: Path
    manifest: dict[str, Any]
    items: pd.DataFrame
    users: pd.DataFrame
    item_embeddings: np.ndarray
    user_embeddings: np.ndarray
    text_embeddings: np.ndarray
    index: ItemIndex
    transitions: ItemTransitions
    seen: SeenItems
    user_tower: UserTower
    item_tower: ItemTower
    ranker: RankerNet | None

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        path = Path(path)
        manifest = read_manifest(path, verify=verify)
        if manifest.get("kind") != "recsys-bundle":
            raise ManifestError(
                f"{path}: not a recsys serving bundle (manifest kind {manifest.get('kind')!r})"
            )
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ManifestError(
                f"{path}: bundle format {manifest.get('format')}, this recsys reads {BUNDLE_FORMAT}"
            )
        missing = [f for f in REQUIRED_FILES if f not in manifest["files"]]
        if manifest.get("ranker") and "ranker.safetensors" not in manifest["files"]:
            missing.append("ranker.safetensors")
        if missing:
            raise ManifestError(f"{path}: manifest lists no {missing}")
        items = pd.read_parquet(path / "items.parquet")
        users = pd.read_parquet(path / "users.parquet")
        embeddings = np.load(path / "item_embeddings.npy")
        user_embeddings = np.load(path / "user_embeddings.npy")
        text = np.load(path / "text_embeddings.npy")
        n, d = manifest["n_items"], manifest["embedding_dim"]
        checks = {
            "items.parquet rows": (len(items), n),
            "users.parquet rows": (len(users), manifest["n_users"]),
            "item_embeddings.npy shape": (embeddings.shape, (n, d)),
            "user_embeddings.npy shape": (user_embeddings.shape, (manifest["n_users"], d)),
            "text_embeddings.npy rows": (text.shape[0], n + FIRST_ITEM_IDX),
        }
        for what, (got, expected) in checks.items():
            if got != expected:
                raise ManifestError(f"{path}: {what} is {got}, manifest says {expected}")
        index = ItemIndex.load(path / "index.faiss")
        n_rows = n + FIRST_ITEM_IDX
        csr = sp.csr_matrix(
            tuple(np.load(path / f"transitions_{p}.npy") for p in ("data", "indices", "indptr")),
            shape=(n_rows, n_rows),
        )
        transitions = ItemTransitions(csr)
        seen = SeenItems(np.load(path / "seen_indptr.npy"), np.load(path / "seen_items.npy"))
        if len(seen.indptr) != len(users) + 1:
            raise ManifestError(
                f"{path}: seen_indptr.npy has {len(seen.indptr)} entries for {len(users)} users"
            )
        ut = manifest["user_tower"]
        encoder = hydra.utils.instantiate(
            _safe_target(ut["encoder"], f"{path} user_tower"), input_dim=ut["dim"]
        )
        user_tower = UserTower(encoder, ut["dim"])
        user_tower.load_state_dict(load_file(path / "user_tower.safetensors"))
        it = manifest["item_tower"]
        item_tower = ItemTower(
            torch.zeros(FIRST_ITEM_IDX, it["text_dim"]),
            np.zeros(FIRST_ITEM_IDX, dtype=bool),
            dim=it["dim"],
            use_text=it["use_text"],
            use_id=it["use_id"],
            fusion=it["fusion"],
        )
        result = item_tower.load_state_dict(load_file(path / "item_tower.safetensors"), strict=False)
        if result.unexpected_keys or any(not k.startswith("id_") for k in result.missing_keys):
            raise ManifestError(f"{path}: item_tower.safetensors does not match its config ({result})")
        ranker = None
        if manifest.get("ranker"):
            ranker = RankerNet(**{k: v for k, v in manifest["ranker"].items()})
            ranker.load_state_dict(load_file(path / "ranker.safetensors"))
            ranker.eval()
        return cls(
            path,
            manifest,
            items,
            users,
            embeddings,
            user_embeddings,
            text,
            index,
            transitions,
            seen,
            user_tower.eval(),
            item_tower.eval(),
            ranker,
        )
