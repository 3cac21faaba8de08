"""Catalog changes made over HTTP (``POST /items``, ``DELETE /items/{id}``), kept next to the bundle.

``<bundle>/catalog_changes.json`` holds every change in order, each addition with the vectors it
was given (item-tower vector and text vector, float32, base64), so a restart or a second worker
replays them exactly without the text encoder. The file is rewritten whole and atomically under an
exclusive lock at each change (changes are rare; a crash never leaves half a file), and carries
the SHA-256 of its entries and of the bundle manifest it extends: an edited or damaged log, or one
that belongs to another bundle, is refused like a tampered bundle (``ManifestError``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.utils.artifacts import ManifestError, exclusive_lock, sha256_file, write_json_atomic

FILE = "catalog_changes.json"
KIND = "recsys-catalog-changes"
FORMAT = 1


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dim: int, what: str) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != 4 * dim:
        raise ValueError(f"{what}: {len(raw) // 4} values, expected {dim}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def entries_digest(entries: list[dict[str, Any]]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Change:
    seq: int
    op: str  # "add" | "delete"
    item_id: str
    title: str = ""
    categories: tuple[str, ...] = ()
    vector: np.ndarray | None = None  # the item tower's vector (add)
    text_vector: np.ndarray | None = None  # the text encoder's vector (add: ranker feature)


class CatalogChangeLog:
    """The change log of one bundle. ``changes_since(seq)`` for replaying, ``append`` to record."""

    def __init__(self, bundle_dir: str | Path, dim: int, text_dim: int):
        self.bundle_dir = Path(bundle_dir)
        self.path = self.bundle_dir / FILE
        self.dim, self.text_dim = int(dim), int(text_dim)
        self.bundle_digest = sha256_file(self.bundle_dir / "manifest.json")
        self._stamp: tuple[int, int] | None = None

    def stamp(self) -> tuple[int, int] | None:
        """(mtime_ns, size) of the file, None when there is none: a cheap 'did it change'."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def changed(self) -> bool:
        return self.stamp() != self._stamp

    def _read(self) -> list[dict[str, Any]]:
        stamp = self.stamp()
        if stamp is None:
            self._stamp = None
            return []
        try:
            payload = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            what = f"not a readable change log ({err})"
            raise ManifestError(f"{self.path}: {what}; restore or remove it") from err
        if not isinstance(payload, dict) or payload.get("kind") != KIND or payload.get("format") != FORMAT:
            raise ManifestError(f"{self.path}: not a recsys catalog change log of format {FORMAT}")
        if payload.get("bundle_manifest_sha256") != self.bundle_digest:
            raise ManifestError(
                f"{self.path}: written for another bundle (its manifest digest differs); remove it "
                "to serve this bundle as exported"
            )
        entries = payload.get("entries")
        if not isinstance(entries, list) or payload.get("sha256") != entries_digest(entries):
            raise ManifestError(
                f"{self.path}: its entries do not match their sha256: the change log was edited or "
                "damaged; restore it, or remove it to serve the bundle as exported"
            )
        self._stamp = stamp
        return entries

    def changes_since(self, seq: int) -> list[Change]:
        """The recorded changes after ``seq``, verified."""
        return [self._change(e, i) for i, e in enumerate(self._read()) if e["seq"] > seq]

    def _change(self, entry: dict[str, Any], line: int) -> Change:
        try:
            op = entry["op"]
            if op not in ("add", "delete"):
                raise ValueError(f"op {op!r}")
            vector = text = None
            if op == "add":
                vector = decode_vector(entry["vector"], self.dim, "vector")
                text = decode_vector(entry["text_vector"], self.text_dim, "text_vector")
            return Change(
                seq=int(entry["seq"]),
                op=op,
                item_id=str(entry["item_id"]),
                title=str(entry.get("title", "")),
                categories=tuple(str(c) for c in entry.get("categories", [])),
                vector=vector,
                text_vector=text,
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ManifestError(f"{self.path}: entry {line}: {err}") from None

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.bundle_dir / (FILE + ".lock"))

    def append(self, change: dict[str, Any]) -> Change:
        """Record one change (``op``, ``item_id`` and for an addition ``title``, ``categories``,
        ``vector``, ``text_vector`` as arrays); returns it with its sequence number."""
        with self._locked():
            entries = self._read()
            entry = {k: v for k, v in change.items() if k not in ("vector", "text_vector")}
            if change["op"] == "add":
                entry["vector"] = encode_vector(change["vector"])
                entry["text_vector"] = encode_vector(change["text_vector"])
            entry["seq"] = (entries[-1]["seq"] if entries else 0) + 1
            entries.append(entry)
            write_json_atomic(
                self.path,
                {
                    "kind": KIND,
                    "format": FORMAT,
                    "bundle_manifest_sha256": self.bundle_digest,
                    "sha256": entries_digest(entries),
                    "entries": entries,
                },
            )
            self._stamp = None  # changed() is true until the caller has read every change
            return self._change(entry, len(entries) - 1)
