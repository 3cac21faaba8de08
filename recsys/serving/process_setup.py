"""Process-level settings of a serving process (applied before LitServe starts its workers)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

HUGEPAGE_MALLOC = "glibc.malloc.hugetlb=1"


def use_hugepage_malloc(env: MutableMapping[str, str] = os.environ) -> None:
    """Let glibc back large allocations with transparent huge pages in the processes started from
    here (LitServe spawns its inference workers, which read GLIBC_TUNABLES at start): the FAISS
    graph is allocated by C++ outside numpy's own huge-page advice, and a search's random walk over
    it missed the TLB less: HNSW top-200 at 434K items 0.66 vs 0.77 ms inside the graph
    (experiments/probe_serving_graph.py). Ignored by other libcs."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_MALLOC}" if tunables else HUGEPAGE_MALLOC
