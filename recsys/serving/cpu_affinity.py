"""Which CPUs the inference workers and the HTTP side run on.

A request crosses four processes (client, uvicorn front end, LitServe's queue manager, inference
worker). Left to the scheduler on a small machine they share cores, and the worker's memory-heavy
graph (HNSW walk, row gathers) evicts the front end's caches between requests; with the worker on
its own core and the HTTP side on the others, known-user p50 at 434K items on 2 cores was
3.6–3.9 ms against 5.1 ms unpinned with the same code (floor 1.4 vs 1.6 ms; experiments/log/serving.md).
"""

from __future__ import annotations

import os


def allowed_cpus() -> set[int] | None:
    """CPUs this process may run on; None where the platform has no affinity API (macOS, Windows)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def split_cpus(workers: int, threads: int, allowed: set[int] | None) -> tuple[set[int], set[int]] | None:
    """(worker CPUs, HTTP CPUs): the last ``workers × threads`` allowed CPUs run inference, the rest
    the HTTP side. Where that leaves nothing to the HTTP side, workers share: as few as one
    worker's ``threads`` (a second worker is mostly a standby that answers while the first
    restarts). None when not even that leaves a CPU: then nothing is pinned."""
    need = min(workers * threads, max(threads, len(allowed or ()) - 1))
    if not allowed or len(allowed) <= need:
        return None
    ordered = sorted(allowed)
    return set(ordered[-need:]), set(ordered[:-need])


def pin_current_thread(cpus: set[int] | None) -> None:
    """Restrict the calling thread (and the threads and processes it starts later) to ``cpus``."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def pin_http_side(workers: int, threads: int) -> set[int] | None:
    """Pin the calling thread, which goes on to start LitServe's queue manager and uvicorn, to the
    HTTP CPUs of ``split_cpus``; returns the CPUs for the inference workers (None: nothing pinned)."""
    split = split_cpus(workers, threads, allowed_cpus())
    if split is None:
        return None
    pin_current_thread(split[1])
    return split[0]
