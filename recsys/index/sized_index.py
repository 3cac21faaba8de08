"""An index chosen by the catalog's size when it is built: exact search for small catalogs.

A graph walk (HNSW at ef_search 256) costs more than scanning every vector until the catalog is
large: for K = 200 candidates at dim 65, one thread, a flat scan took 0.13 ms at 3K items and
0.8 ms at 50K, HNSW 0.3 ms and 1.4 ms (experiments/log/index.md). Below ``flat_max_items`` the
exact index is both faster and exact; above it the configured ANN index is built.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recsys.index.faiss_index import FlatIndex, ItemIndex


class SizedIndex:
    """``build`` returns the index it built: ``FlatIndex`` up to ``flat_max_items`` vectors, else
    ``large(dim)``."""

    def __init__(self, dim: int, *, flat_max_items: int, large: Callable[..., ItemIndex]):
        self.dim, self.flat_max_items, self.large = dim, int(flat_max_items), large

    def choose(self, n_items: int) -> ItemIndex:
        return FlatIndex(self.dim) if n_items <= self.flat_max_items else self.large(dim=self.dim)

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> ItemIndex:
        return self.choose(len(ids)).build(ids, vectors)
