"""A per-item additive score inside an inner-product index, as one extra coordinate.

Scoring u·v + b for the text-only items (``cold_score_offset``) is u'·v' with v' = [v, b·is_cold]
and u' = [u, 1], so any FAISS inner-product index (flat, HNSW, IVF) ranks by the offset score in
one search, and an item added later carries its own coordinate. Without an offset the vectors
stay as they are: no extra coordinate, the index of a bundle without the option is unchanged.
"""

from __future__ import annotations

import numpy as np


def index_vectors(vectors: np.ndarray, is_cold: np.ndarray, offset: float) -> np.ndarray:
    """Item vectors [n, d] as stored in the index: [n, d + 1] when ``offset`` is not 0."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if not offset:
        return vectors
    extra = (np.asarray(is_cold, dtype=np.float32) * np.float32(offset))[:, None]
    return np.ascontiguousarray(np.hstack([vectors, extra]))


def index_queries(users: np.ndarray, offset: float) -> np.ndarray:
    """User vectors [B, d] as the index is searched with: [B, d + 1] (a trailing 1) with an offset."""
    users = np.asarray(users, dtype=np.float32)
    if not offset:
        return users
    return np.ascontiguousarray(np.hstack([users, np.ones((len(users), 1), np.float32)]))


def index_dim(dim: int, offset: float) -> int:
    """The dimension of an index built by ``index_vectors`` over d-dimensional item vectors."""
    return int(dim) + (1 if offset else 0)
