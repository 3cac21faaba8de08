"""The fault run of bench_serving.py: concurrent clients, one SIGKILL of the inference worker.

Clients loop over GET /recommend/{user_id} for ``seconds``; at the midpoint the worker is killed
(what the kernel's OOM killer does), and one more request is sent right after the kill (before the
server can have noticed). Reported: requests failed (by status), the worst wait of any request
(every one must be answered, 200 or 503, within a second), that request's status and wait, time
from the kill to the next success and to /health answering 200 again, and latency percentiles
over the whole window (the minute around the kill) and outside the fault.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def spawned_children(parent: int) -> list[int]:
    """PIDs of the processes ``parent`` started with multiprocessing's spawn (LitServe's workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def lock_holders() -> set[int]:
    """PIDs holding a flock (``/proc/locks``): a serving worker holds one while it is active
    (recsys.serving.active_slots), a standby holds none."""
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[1] == "FLOCK":
            holders.add(int(fields[4]))
    return holders


def active_workers(server_pid: int) -> list[int]:
    """The server's inference workers that answer requests (all of them without standbys)."""
    workers = spawned_children(server_pid)
    active = [pid for pid in workers if pid in lock_holders()]
    return active or workers


def fault_run(base: str, server_pid: int, user_ids: np.ndarray, clients: int, seconds: float) -> dict:
    calls: list[tuple[float, float, int | str]] = []  # (sent, answered, status or error name)
    health: list[tuple[float, int]] = []
    stop = time.monotonic() + seconds

    def client(w: int) -> None:
        with httpx.Client(timeout=60) as c:
            i = w * 1_000_003
            while time.monotonic() < stop:
                sent = time.monotonic()
                try:
                    status: int | str = c.get(f"{base}/recommend/{user_ids[i % len(user_ids)]}").status_code
                except httpx.TransportError as err:
                    status = type(err).__name__
                calls.append((sent, time.monotonic(), status))
                i += 1

    def poll_health() -> None:
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop:
                try:
                    health.append((time.monotonic(), c.get(f"{base}/health").status_code))
                except httpx.TransportError:
                    health.append((time.monotonic(), -1))
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    threads.append(threading.Thread(target=poll_health))
    for t in threads:
        t.start()
    time.sleep(seconds / 2)
    workers = spawned_children(server_pid)
    victim = active_workers(server_pid)[0]  # the one answering (a standby would be no fault)
    right_after: dict = {}

    def ask_right_after() -> None:
        with httpx.Client(timeout=60) as c:
            sent = time.monotonic()
            try:
                right_after["status"] = c.get(f"{base}/recommend/{user_ids[0]}").status_code
            except httpx.TransportError as err:
                right_after["status"] = type(err).__name__
            right_after["wait_s"] = time.monotonic() - sent

    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    probe = threading.Thread(target=ask_right_after)
    probe.start()
    for t in [*threads, probe]:
        t.join()
    sent, answered, status = (np.array([c[k] for c in calls], dtype=object) for k in range(3))
    ok = np.array([s == 200 for s in status])
    latency_ms = (answered - sent).astype(float) * 1000
    after = ok & (sent.astype(float) > killed_at)  # served by the new worker
    first_ok = float(answered[after].astype(float).min() - killed_at) if after.any() else float("nan")
    after_kill = [(t, s) for t, s in health if t > killed_at]
    down = next((t for t, s in after_kill if s == 503), None)  # /health noticed the dead worker
    back = next((t for t, s in after_kill if down is not None and t > down and s == 200), None)
    calm = (sent.astype(float) < killed_at - 5) | (sent.astype(float) > killed_at + 15)
    failed = {str(s): int(sum(1 for x in status if x == s)) for s in set(status) if s != 200}
    return {
        "requests": len(calls),
        "failed": failed,
        "worst_wait_s": max(float(latency_ms.max()) / 1000, right_after.get("wait_s", 0.0)),
        "right_after_kill": right_after,
        "next_success_s": first_ok,
        "health_503_s": (down - killed_at) if down is not None else float("nan"),
        "health_back_s": (back - killed_at) if back is not None else float("nan"),
        "p50_ms": float(np.percentile(latency_ms[ok], 50)),
        "p99_ms": float(np.percentile(latency_ms[ok], 99)),
        "p99_calm_ms": float(np.percentile(latency_ms[ok & calm], 99)),
        "max_ms": float(latency_ms.max()),
        "worker_replaced": spawned_children(server_pid) != workers,
    }
