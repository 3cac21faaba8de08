"""The serving bundle: plain exported artifacts the inference graph loads (never checkpoints).

Files (every one hashed in ``manifest.json``, verified on load):
- ``items.parquet``: item_idx, item_id, title, categories, popularity (train interactions, or
  every known one when the ranker's features are as of the request), recent_popularity
  (interactions in the ranker's window before the end of the data), age_days (from the item's
  first interaction to the end of the data, −1 for none: the ranker's ``item_age``), is_warm
- ``users.parquet``: every user of the dataset: user_id, history (item_id strings of all their
  interactions, whatever split role, oldest first, capped at max_history), timestamps (ms)
- ``item_embeddings.npy``: float32 [n_items, d], row i = items.parquet row i (item_idx = i + 2)
- ``user_embeddings.npy``: float32 [n_users, d], known users' vectors (row = users.parquet row)
- ``text_embeddings.npy``: float32 [n_items + 2, text_dim] (ranker text feature, cold path)
- ``index.faiss`` + ``index.faiss.json``: the ANN index over item_idx ids
- ``transitions_{indptr,indices,data}.npy``: CSR item -> next-item counts (ranker feature)
- ``seen_{indptr,items}.npy``: CSR of every item_idx each user (users.parquet row) interacted
  with, uncapped, so known users are never recommended something they already have
- ``user_tower.safetensors``, ``item_tower.safetensors`` (cold path only: no ID table),
  ``ranker.safetensors`` (optional); their constructor configs live in the manifest
- ``item_attributes.parquet`` / ``user_attributes.parquet`` (when the ranker reads declared
  attributes): item_id / user_id (in items.parquet / users.parquet order), then each categorical
  attribute's code and each numeric attribute's value (``recsys.features.attribute_features``)
- ``user_candidates.npy`` / ``user_candidate_scores.npy`` (optional; ``export.known_candidates``):
  int32 item_idx / float32 exact score [n_users, K], each known user's retrieval candidates (users.parquet
  row order, best first, padded with item_idx 0 and -inf), computed at export by the search a request
  runs (``recsys.serving.known_candidates``); without them every request searches the index
- ``user_candidate_logits.npy`` (with the candidates and a ranker): float32 [n_users, K], the
  ranker's logit of each of those candidates (NaN for a user without history), computed by the
  serving graph's ranking of the written bundle; without it a known user's list is ranked per request
- ``static_text/<key>/`` (when the item tower reads text embedded by the static encoder): the
  token table, so new items' text is embedded on any machine without distilling it again
- ``catalog_changes.json`` (not in the manifest): items added and deleted over HTTP
  (``recsys.serving.catalog_changes``), verified on its own
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from recsys.data.dataset import FIRST_ITEM_IDX
from recsys.data.seen_items import SeenItems
from recsys.data.text_embeddings import TextEncoder
from recsys.data.text_encoders import encoder_from_key
from recsys.features.attribute_features import AttributeLayout, Attributes, AttributeTable
from recsys.features.ranker_features import feature_columns
from recsys.features.transitions import ItemTransitions
from recsys.index.faiss_index import ItemIndex
from recsys.models.item_tower import ItemTower
from recsys.models.ranker_net import RankerNet
from recsys.models.user_tower import UserTower, build_encoder
from recsys.serving.known_candidates import KnownCandidates
from recsys.utils.artifacts import ManifestError, read_manifest

STATIC_TEXT_DIR = "static_text"
CANDIDATE_FILES = ("user_candidates.npy", "user_candidate_scores.npy")
CANDIDATE_LOGITS_FILE = "user_candidate_logits.npy"
ATTRIBUTE_FILES = {"item": "item_attributes.parquet", "user": "user_attributes.parquet"}
# 2: encoders named from a registry, candidate settings in one block (format 1: class paths)
BUNDLE_FORMAT = 2
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
    attributes: Attributes | None = None  # what the ranker reads of the declared attributes
    candidates: KnownCandidates | None = None  # known users' retrieval, computed at export

    def text_encoder(self) -> TextEncoder:
        """The encoder the catalog's text was embedded with (new items' text goes through it)."""
        info = self.manifest.get("text_encoder")
        if not self.manifest["item_tower"].get("use_text") or not info:
            raise ValueError("this bundle's item tower reads no text: new items cannot be embedded")
        static = self.path / STATIC_TEXT_DIR
        return encoder_from_key(info["type"], info["key"], static_dir=static if static.is_dir() else None)

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
                f"{path}: bundle format {manifest.get('format')}, this recsys reads {BUNDLE_FORMAT}; "
                "export the bundle again with `python -m recsys.export` (or `make demo`)"
            )
        missing = [f for f in REQUIRED_FILES if f not in manifest["files"]]
        if manifest.get("ranker") and "ranker.safetensors" not in manifest["files"]:
            missing.append("ranker.safetensors")
        layout = AttributeLayout.from_dict((manifest.get("ranker") or {}).get("attributes"))
        if layout.width:
            missing += [f for f in ATTRIBUTE_FILES.values() if f not in manifest["files"]]
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
        try:
            encoder = build_encoder(ut["encoder"], ut["dim"], ut["params"])
        except (ValueError, TypeError) as err:
            raise ManifestError(f"{path}: user_tower: {err}") from err
        # serving: no history dropout (eval); bundles written before the switch: normalized
        normalize = ut.get("normalize", True)
        user_tower = UserTower(encoder, dim=ut["dim"], history_dropout=0.0, normalize=normalize)
        user_tower.load_state_dict(load_file(path / "user_tower.safetensors"))
        it = manifest["item_tower"]
        item_tower = ItemTower(
            torch.zeros(FIRST_ITEM_IDX, it["text_dim"]),
            np.zeros(FIRST_ITEM_IDX, dtype=bool),
            dim=it["dim"],
            use_text=it["use_text"],
            use_id=it["use_id"],
            fusion=it["fusion"],
            mlp=it.get("mlp", True),  # bundles written before the switch: the MLP, normalized
            normalize=it.get("normalize", True),
            id_dropout=0.0,  # the cold path only (no ID table is served)
            sparse=False,
        )
        result = item_tower.load_state_dict(load_file(path / "item_tower.safetensors"), strict=False)
        if result.unexpected_keys or any(not k.startswith("id_") for k in result.missing_keys):
            raise ManifestError(f"{path}: item_tower.safetensors does not match its config ({result})")
        ranker = None
        if manifest.get("ranker"):
            config = {"prior_scale": 0.0, **manifest["ranker"]}  # bundles before the score prior: none
            ranker = RankerNet(feature_columns=feature_columns(config.pop("features")), **config)
            ranker.load_state_dict(load_file(path / "ranker.safetensors"))
            ranker.eval()
        attributes = _attributes(path, layout, items, users, n_rows) if layout.width else None
        candidates = _known_candidates(path, manifest, len(users), n_rows)
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
            attributes,
            candidates,
        )


def _known_candidates(
    path: Path, manifest: dict[str, Any], n_users: int, n_rows: int
) -> KnownCandidates | None:
    """The known users' candidates when the bundle has them, shapes and item_idx range checked."""
    present = [f for f in CANDIDATE_FILES if f in manifest["files"]]
    if not present:
        return None
    if len(present) < len(CANDIDATE_FILES):
        raise ManifestError(f"{path}: manifest lists {present} without {set(CANDIDATE_FILES) - set(present)}")
    items, scores = (np.load(path / f) for f in CANDIDATE_FILES)
    if items.ndim != 2 or items.shape[0] != n_users or scores.shape != items.shape:
        raise ManifestError(
            f"{path}: {CANDIDATE_FILES[0]} {items.shape} / {CANDIDATE_FILES[1]} {scores.shape}: "
            f"expected [{n_users} users, K] each"
        )
    if items.size and (items.min() < 0 or items.max() >= n_rows):
        raise ManifestError(f"{path}: {CANDIDATE_FILES[0]} holds item_idx outside 0..{n_rows - 1}")
    logits = None
    if CANDIDATE_LOGITS_FILE in manifest["files"]:
        if not manifest.get("ranker"):
            raise ManifestError(f"{path}: {CANDIDATE_LOGITS_FILE} without a ranker")
        logits = np.load(path / CANDIDATE_LOGITS_FILE)
        if logits.shape != items.shape:
            raise ManifestError(
                f"{path}: {CANDIDATE_LOGITS_FILE} {logits.shape}: expected {items.shape}, "
                f"as {CANDIDATE_FILES[0]}"
            )
    return KnownCandidates(items, scores, logits)


def _attributes(
    path: Path, layout: AttributeLayout, items: pd.DataFrame, users: pd.DataFrame, n_rows: int
) -> Attributes:
    """The encoded attribute tables, rows checked against items.parquet / users.parquet."""
    tables = {}
    for kind, key, frame, rows, size in (
        ("item", "item_id", items, items["item_idx"].to_numpy(), n_rows),
        ("user", "user_id", users, np.arange(len(users)), len(users)),
    ):
        table = pd.read_parquet(path / ATTRIBUTE_FILES[kind])
        if not np.array_equal(table[key].astype(str).to_numpy(), frame[key].astype(str).to_numpy()):
            raise ManifestError(
                f"{path}: {ATTRIBUTE_FILES[kind]} rows do not follow {kind}s.parquet's {key}s"
            )
        tables[kind] = AttributeTable.encoded(table, rows, size, layout, kind)
    return Attributes(layout, tables["item"], tables["user"])
