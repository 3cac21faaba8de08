"""FAISS inner-product indexes over item ids, one interface for flat / hnsw / ivf.

Vectors are the item tower's L2-normalized outputs, so inner product is the training score.
Ids are kept by ``IndexIDMap2``, which lets items be added and removed at runtime. Only flat
storage can really delete through it (``IndexIDMap2.remove_ids`` assumes the sub-index shifts its
internal ids down, which IVF does not, and HNSW cannot delete graph nodes at all), so removed
HNSW/IVF ids become tombstones filtered inside the search by an ``IDSelector`` (no recall lost to
post-filtering) and ``compact()`` rebuilds without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from recsys.utils.artifacts import write_json_atomic


class IndexInputError(ValueError):
    """Bad ids or vectors given to an ItemIndex (duplicates, unknown ids, wrong dimension)."""


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise IndexInputError(f"expected vectors of shape [n, {dim}], got {list(vectors.shape)}")
    return vectors


def _as_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise IndexInputError(f"expected a 1-d array of int64 ids, got shape {list(ids.shape)}")
    if len(np.unique(ids)) != len(ids):
        raise IndexInputError("ids must be unique")
    return ids


class ItemIndex:
    """``search(queries, k, exclude) -> (scores [B, k], ids [B, k])``; missing slots have id −1."""

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[ItemIndex]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._registry[cls.kind] = cls

    def __init__(self, dim: int):
        self.dim = int(dim)
        self._index: faiss.IndexIDMap2 | None = None
        self._tombstones: set[int] = set()

    # ------------------------------------------------------------------ backend hooks
    def params(self) -> dict[str, Any]:
        """Constructor arguments (saved next to the index so ``load`` rebuilds the same object)."""
        return {"dim": self.dim}

    def _make_base(self, vectors: np.ndarray) -> faiss.Index:
        raise NotImplementedError

    def _search_params(self) -> faiss.SearchParameters | None:
        return None

    def _configure(self) -> None:
        """Apply runtime knobs (efSearch, nprobe) to the base index."""

    # ------------------------------------------------------------------ building
    def build(self, ids: np.ndarray, vectors: np.ndarray) -> ItemIndex:
        ids, vectors = _as_ids(ids), _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise IndexInputError(f"{len(ids)} ids for {len(vectors)} vectors")
        self._base = self._make_base(vectors)  # IndexIDMap2 does not own it: keep it alive
        self._index = faiss.IndexIDMap2(self._base)
        self._configure()
        self._tombstones = set()
        if len(ids):
            self._index.add_with_ids(vectors, ids)
        return self

    @property
    def index(self) -> faiss.IndexIDMap2:
        if self._index is None:
            raise RuntimeError(f"{type(self).__name__} is empty: call build() or load() first")
        return self._index

    def _stored_ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map)

    def ids(self) -> np.ndarray:
        """Live ids, in insertion order."""
        stored = self._stored_ids()
        if not self._tombstones:
            return stored
        return stored[~np.isin(stored, np.fromiter(self._tombstones, dtype=np.int64))]

    def __len__(self) -> int:
        return self.index.ntotal - len(self._tombstones)

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) not in self._tombstones and bool(np.any(self._stored_ids() == int(item_id)))

    def reconstruct(self, item_id: int) -> np.ndarray:
        if item_id not in self:
            raise KeyError(f"item id {item_id} is not in the index")
        return self.index.reconstruct(int(item_id))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = _as_ids(ids), _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise IndexInputError(f"{len(ids)} ids for {len(vectors)} vectors")
        stored = self._stored_ids()
        clash = ids[np.isin(ids, stored)]
        live_clash = [int(i) for i in clash if int(i) not in self._tombstones]
        if live_clash:
            raise IndexInputError(f"ids already in the index (remove them first): {live_clash[:10]}")
        if len(clash):  # re-adding tombstoned ids: rebuild without the stale copies first
            self.compact()
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were present. Unknown ids are ignored."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        present = ids[np.isin(ids, self._stored_ids())]
        present = np.array([i for i in present if int(i) not in self._tombstones], dtype=np.int64)
        if len(present) == 0:
            return 0
        if self.supports_removal:
            self.index.remove_ids(faiss.IDSelectorBatch(present))
        else:
            self._tombstones.update(int(i) for i in present)
        return len(present)

    @property
    def supports_removal(self) -> bool:
        return True

    def compact(self) -> None:
        """Rebuild from the live vectors (drops HNSW tombstones)."""
        live = self.ids()
        vectors = np.stack([self.index.reconstruct(int(i)) for i in live]) if len(live) else None
        self.build(live, vectors if vectors is not None else np.zeros((0, self.dim), np.float32))

    # ------------------------------------------------------------------ searching
    def search(
        self, queries: np.ndarray, k: int, exclude: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids by inner product, best first, skipping each query's ``exclude`` ids.

        A batch removes excluded ids by over-fetching ``k + max(len(exclude))`` and filtering, so it
        stays one FAISS call (a per-query selector would mean one call per user); a single query
        (serving) filters inside the search, which keeps HNSW's beam at ``max(ef_search, k)``.
        """
        queries = _as_vectors(queries, self.dim)
        n = len(queries)
        skip = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        if n == 1 and exclude is not None:
            skip = np.concatenate([skip, np.asarray(exclude[0], dtype=np.int64)])
            exclude = None
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, max(len(self), 1))
        params = self._search_params()
        if len(skip):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(skip))
            params = params or faiss.SearchParameters()
            params.sel = selector
        scores, ids = self.index.search(queries, fetch, params=params)
        if extra:
            rows = np.repeat(np.arange(n), [len(e) for e in exclude])
            flat = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
            key = rows * (1 << 40) + flat
            cand = np.arange(n)[:, None] * (1 << 40) + np.where(ids < 0, (1 << 40) - 1, ids)
            drop = np.isin(cand, key) | (ids < 0)
            order = np.argsort(drop, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(np.where(drop, -1, ids), order, axis=1)
        scores, ids = scores[:, :k], ids[:, :k]
        if ids.shape[1] < k:  # fewer items than k
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> list[Path]:
        """Write ``<path>`` (FAISS binary format) and ``<path>.json``; returns the files written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)
        meta = path.with_name(path.name + ".json")
        write_json_atomic(
            meta,
            {
                "kind": self.kind,
                "params": self.params(),
                "ntotal": int(self.index.ntotal),
                "tombstones": sorted(self._tombstones),
            },
        )
        return [path, meta]

    @classmethod
    def load(cls, path: str | Path) -> ItemIndex:
        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{meta_path}: index metadata missing next to {path}") from err
        kind = meta.get("kind")
        if kind not in cls._registry:
            raise ValueError(f"{meta_path}: unknown index kind {kind!r}; known: {sorted(cls._registry)}")
        obj = cls._registry[kind](**meta["params"])
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        if index.ntotal != meta["ntotal"] or index.d != obj.dim:
            raise ValueError(
                f"{path}: holds {index.ntotal} vectors of dim {index.d}; "
                f"{meta_path.name} says {meta['ntotal']} of dim {obj.dim}"
            )
        obj._index = index
        obj._tombstones = {int(i) for i in meta.get("tombstones", [])}
        obj._configure()
        return obj


class FlatIndex(ItemIndex):
    """Exact inner product. Batched search uses BLAS (threshold lowered: 6× queries/s at batch 64)."""

    kind = "flat"

    def _make_base(self, vectors: np.ndarray) -> faiss.Index:
        return faiss.IndexFlatIP(self.dim)

    def _configure(self) -> None:
        faiss.cvar.distance_compute_blas_threshold = 4


class HNSWIndex(ItemIndex):
    kind = "hnsw"

    # vector storage inside the graph: fp32, or scalar-quantized (half / quarter the bytes a search
    # walks through, for a little recall)
    STORAGE: ClassVar[dict[str, int | None]] = {
        "flat": None,
        "fp16": faiss.ScalarQuantizer.QT_fp16,
        "sq8": faiss.ScalarQuantizer.QT_8bit,
    }

    def __init__(self, dim: int, *, m: int, ef_construction: int, ef_search: int, storage: str):
        # the values live in configs/index/hnsw.yaml (and a bundle's index metadata)
        super().__init__(dim)
        if storage not in self.STORAGE:
            raise ValueError(f"HNSW storage must be one of {sorted(self.STORAGE)}, got {storage!r}")
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        self.storage = storage

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "storage": self.storage,
        }

    def _make_base(self, vectors: np.ndarray) -> faiss.Index:
        qtype = self.STORAGE[self.storage]
        if qtype is None:
            base = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        else:
            base = faiss.IndexHNSWSQ(self.dim, qtype, self.m, faiss.METRIC_INNER_PRODUCT)
            if len(vectors):
                base.train(vectors)  # per-dimension ranges (sq8); a no-op for fp16
        base.hnsw.efConstruction = self.ef_construction
        return base

    def _configure(self) -> None:
        faiss.downcast_index(self.index.index).hnsw.efSearch = self.ef_search

    def _search_params(self) -> faiss.SearchParameters:
        return faiss.SearchParametersHNSW(efSearch=self.ef_search)

    @property
    def supports_removal(self) -> bool:
        return False


class IVFIndex(ItemIndex):
    """Inverted lists over a k-means coarse quantizer; ``nlist`` defaults to ~4·√n."""

    kind = "ivf"

    def __init__(self, dim: int, *, nlist: int | None, nprobe: int, seed: int):
        # the values live in configs/index/ivf.yaml (and a bundle's index metadata)
        super().__init__(dim)
        self.nlist, self.nprobe, self.seed = nlist, int(nprobe), int(seed)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "nlist": self.nlist, "nprobe": self.nprobe, "seed": self.seed}

    def _make_base(self, vectors: np.ndarray) -> faiss.Index:
        n = len(vectors)
        if self.nlist is None:
            self.nlist = int(max(1, min(4 * np.sqrt(max(n, 1)), n // 39 or 1)))
        if n < self.nlist:
            raise IndexInputError(
                f"IVF with nlist={self.nlist} needs at least {self.nlist} vectors to train, got {n}"
            )
        quantizer = faiss.IndexFlatIP(self.dim)
        base = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        base.cp.seed = self.seed
        sample = vectors
        if n > 256 * self.nlist:  # FAISS's own cap on useful training points
            sample = vectors[np.random.default_rng(self.seed).choice(n, 256 * self.nlist, replace=False)]
        base.train(sample)
        base.make_direct_map()  # reconstruct() by id, needed by compact()
        self._quantizer = quantizer  # the IVF index references it without owning it: keep it alive
        return base

    def _configure(self) -> None:
        faiss.extract_index_ivf(self.index.index).nprobe = self.nprobe

    def _search_params(self) -> faiss.SearchParameters:
        return faiss.SearchParametersIVF(nprobe=self.nprobe)

    @property
    def supports_removal(self) -> bool:
        return False
