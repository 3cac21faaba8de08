"""Artifact bundles: atomic directory writes and sha256 manifests that loaders verify."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_TRACKED_LIBRARIES = (
    "recsys",
    "torch",
    "lightning",
    "numpy",
    "pandas",
    "pyarrow",
    "faiss-cpu",
    "sentence-transformers",
    "hydra-core",
)


class ManifestError(RuntimeError):
    """An artifact directory does not match its manifest (missing, tampered or incomplete)."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def checkpoint_file(path: str | None, key: str, task: str) -> Path:
    """The checkpoint a command-line ``key`` names, or an error saying which key and what is wrong."""
    if not path:
        raise ValueError(f"{task} needs {key}=<checkpoint path>")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{key}={file}: checkpoint not found")
    return file


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` under a temporary name and rename it: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a staging directory that replaces ``target`` only if the block finishes.

    A crash leaves ``target`` untouched (the previous complete version, or nothing): readers
    never see a half-written directory under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block: processes
    that write the same artifact (two runs preparing one dataset, two workers appending one change
    log) take turns. The kernel releases it if the holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_manifest(directory: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``directory`` and write ``manifest.json`` (last, so it marks completeness)."""
    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {**info, "created_at": utc_now(), "versions": library_versions(), "files": files}
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json``; with ``verify`` check that every listed file exists with its hash."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    if not path.is_file():
        raise ManifestError(f"{path}: missing; the directory is incomplete or was not written by recsys")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: invalid JSON ({err})") from err
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ManifestError(f"{path}: no 'files' table of sha256 hashes")
    if verify:
        for name, expected in files.items():
            file = directory / name
            if not file.is_file():
                raise ManifestError(f"{file}: listed in {MANIFEST} but missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ManifestError(
                    f"{file}: sha256 {actual[:12]}… does not match {MANIFEST} ({expected[:12]}…); "
                    "the file was modified or is corrupt"
                )
    return manifest
