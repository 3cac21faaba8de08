"""Serving benchmark: the recsys server on loopback vs a constant-response LitServe endpoint.

Starts `python -m recsys.serve` for the bundle and a LitServe server whose predict returns a fixed
10-item answer (the floor: HTTP + LitServe queueing, no model), both with one inference worker and
one torch thread, and between them recsys' own routes with a worker that answers the same fixed
list (what our HTTP side adds, apart from the graph's work), all running at once, then measures
for each: time to ready, sequential latency (p50/p95/p99 over ``--requests``, the endpoints taking
turns of ``--block`` requests) and throughput with ``--clients`` concurrent clients for ``--seconds``.

    python experiments/bench_serving.py --bundle artifacts/demo/bundle [--requests 1000] [--seconds 30]
    python experiments/bench_serving.py --bundle … --fault --seconds 60   # kill the worker midway
    python experiments/bench_serving.py --fault --standby 0              # … with no standby worker
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._fault_run import fault_run
from experiments._measure import report
from recsys.serving.cpu_affinity import allowed_cpus, split_cpus

REPO = Path(__file__).resolve().parents[1]
CONSTANT_SERVER = Path(__file__).resolve().parent / "_constant_server.py"


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen) -> None:
    """LitServe forks API servers and inference workers: stop the whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)


def start(
    argv: list[str], port: int, health: str, env: dict, cpus: set[int] | None = None
) -> tuple[subprocess.Popen, float]:
    if port_in_use(port):  # a stale server would answer instead and make the numbers meaningless
        raise RuntimeError(f"port {port} is already in use; stop whatever listens there first")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # inherited by its workers
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise TimeoutError(f"server on port {port} not ready in 180 s")


def serve_argv(args: argparse.Namespace, *overrides: str) -> list[str]:
    """``python -m recsys.serve`` on the bundle and port, one thread, pinned unless ``--no-pin``."""
    return [
        sys.executable,
        "-m",
        "recsys.serve",
        f"bundle={args.bundle}",
        f"port={args.port}",
        "threads=1",
        f"pin_cpus={not args.no_pin}",
        *overrides,
    ]


def sequential(
    calls: dict[str, Callable], requests: int, block: int, warmup: int = 50
) -> dict[str, np.ndarray]:
    """Latency ms of ``requests`` sequential requests per endpoint, interleaved: ``block`` requests to
    each endpoint in turn, so every endpoint sees the same phases of the machine's speed (measured
    one after another, a floor and a route minutes apart differed by up to 1.5× on this VM)."""
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    with httpx.Client(timeout=30) as client:
        for call in calls.values():
            for i in range(warmup):
                call(client, i)
        for first in range(0, requests, block):
            for name, call in calls.items():
                for i in range(first, min(first + block, requests)):
                    t0 = time.perf_counter()
                    response = call(client, i)
                    latencies[name].append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
    return {name: np.array(values) for name, values in latencies.items()}


def throughput(call: Callable, clients: int, seconds: float) -> dict:
    """Requests a second (and errors) with ``clients`` concurrent clients for ``seconds``."""
    done, errors = [0] * clients, [0] * clients
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = w * 1_000_000
            while time.monotonic() < stop:
                ok = call(client, i).status_code == 200
                done[w] += ok
                errors[w] += not ok
                i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(done) / (time.perf_counter() - t0), "errors": sum(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="artifacts/demo/bundle")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--block", type=int, default=100, help="sequential requests to one endpoint before the next's turn"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--server-cpus",
        help="pin the servers to these CPUs (e.g. 1) and the client to the others; default: shared",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="servers leave CPU placement to the scheduler (serve.pin_cpus=false)",
    )
    parser.add_argument(
        "--fault",
        action="store_true",
        help="only the fault run: --clients clients for --seconds, the inference worker killed midway",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="--fault: servers started and killed, one row each"
    )
    parser.add_argument(
        "--standby",
        type=int,
        default=None,
        help="--fault: the server's standby workers (serve.standby_workers; default: the config's)",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    server_cpus = {int(c) for c in args.server_cpus.split(",")} if args.server_cpus else None
    if server_cpus:
        client_cpus = set(os.sched_getaffinity(0)) - server_cpus
        if not client_cpus:
            raise ValueError(f"--server-cpus {args.server_cpus} leaves no CPU for the client")
        os.sched_setaffinity(0, client_cpus)
    split = None if args.no_pin else split_cpus(1, 1, server_cpus or allowed_cpus())
    placement = (
        f"servers pinned to CPU {sorted(server_cpus)}, client to CPU {sorted(client_cpus)}"
        if server_cpus
        else f"{len(allowed_cpus() or ())} cores shared by client and servers"
    ) + (
        f"; each server puts its inference worker on CPU {sorted(split[0])} and its HTTP side on "
        f"CPU {sorted(split[1])} (`serve.pin_cpus`)"
        if split
        else "; no CPU pinning (`--no-pin`)"
        if args.no_pin
        else ""
    )
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIT_SERVER_API_KEY": "", "PYTHONPATH": path}
    users = pd.read_parquet(Path(args.bundle) / "users.parquet", columns=["user_id", "history"])
    rng = np.random.default_rng(0)
    user_ids = users["user_id"].astype(str).to_numpy()[rng.permutation(len(users))]
    histories = users["history"].to_numpy()[rng.permutation(len(users))]
    base = f"http://127.0.0.1:{args.port}"
    if args.fault:
        run_fault(args, env, base, user_ids, placement, server_cpus)
        return

    floor_port, routes_port = args.port + 1, args.port + 2
    pin = ["--no-pin"] if args.no_pin else []
    servers: list[subprocess.Popen] = []
    try:  # every server up at once (an idle one waits on its queues), measured in turns
        floor, floor_ready = start(
            [sys.executable, str(CONSTANT_SERVER), str(floor_port), *pin],
            floor_port,
            "/health",
            env,
            server_cpus,
        )
        servers.append(floor)
        routes, _ = start(
            [sys.executable, str(CONSTANT_SERVER), str(routes_port), "--recsys-routes", args.bundle, *pin],
            routes_port,
            "/health",
            env,
            server_cpus,
        )
        servers.append(routes)
        server, ready_s = start(serve_argv(args), args.port, "/health", env, server_cpus)
        servers.append(server)
        calls = {
            "constant LitServe endpoint (floor)": lambda c, i: c.post(
                f"http://127.0.0.1:{floor_port}/predict", json={"user": str(i)}
            ),
            "recsys routes, fixed answer (no graph)": lambda c, i: c.get(
                f"http://127.0.0.1:{routes_port}/recommend/{user_ids[i % len(user_ids)]}"
            ),
            "recsys POST route, fixed answer (no graph)": lambda c, i: c.post(
                f"http://127.0.0.1:{routes_port}/recommend",
                json={"history": list(histories[i % len(histories)]), "top_k": 10},
            ),
            "GET /recommend/{user_id} (known user)": lambda c, i: c.get(
                f"{base}/recommend/{user_ids[i % len(user_ids)]}", params={"top_k": 10}
            ),
            "POST /recommend (anonymous history)": lambda c, i: c.post(
                f"{base}/recommend", json={"history": list(histories[i % len(histories)]), "top_k": 10}
            ),
        }
        latencies = sequential(calls, args.requests, args.block)
        rows = {
            name: {
                **{f"p{q}": np.percentile(latencies[name], q) for q in (50, 95, 99)},
                **throughput(call, args.clients, args.seconds),
            }
            for name, call in calls.items()
        }
    finally:
        for proc in servers:
            stop(proc)
    import json

    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    lines = [
        f"Bundle `{args.bundle}`: {manifest['n_items']:,} items, {manifest['n_users']:,} users, index "
        f"`{manifest['index']['kind']}`, K = {manifest['candidates']['num_candidates']} candidates "
        f"{'re-ranked by the ranker' if manifest.get('ranker') else 'in retrieval order (no ranker)'}, top 10 returned. "
        f"One LitServe inference worker, 1 torch/FAISS thread, loopback; {placement}. All servers run "
        f"at once; the sequential requests go to each endpoint in turns of {args.block}, so the floor "
        "and every route share the machine's speed phases; throughput is measured per endpoint.",
        f"Time to ready (process start → `/health` 200): recsys {ready_s:.1f} s; constant server {floor_ready:.1f} s.",
        "",
        f"| endpoint | p50 ms | p50 / floor p50 | p95 ms | p99 ms (sequential, {args.requests} requests, "
        f"in turns of {args.block}) | "
        f"req/s ({args.clients} clients, {args.seconds:.0f} s) | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    floor_p50 = rows["constant LitServe endpoint (floor)"]["p50"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['p50']:.1f} | {r['p50'] / floor_p50:.1f}× | {r['p95']:.1f} | {r['p99']:.1f} | "
            f"{r['rps']:.0f} | {r['errors']} |"
        )
    report("Serving benchmark (issue 5)", "\n".join(lines), record=not args.no_record)


def run_fault(args, env: dict, base: str, user_ids, placement: str, server_cpus) -> None:
    import json

    argv = serve_argv(args, *([f"standby_workers={args.standby}"] if args.standby is not None else []))
    results, ready = [], []
    for _ in range(args.runs):
        server, ready_s = start(argv, args.port, "/health", env, server_cpus)
        try:
            results.append(fault_run(base, server.pid, user_ids, args.clients, args.seconds))
            ready.append(ready_s)
        finally:
            stop(server)
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    lines = [
        f"Bundle `{args.bundle}`: {manifest['n_items']:,} items, index `{manifest['index']['kind']}`, "
        f"ranker {'on' if manifest.get('ranker') else 'off'}; one active inference worker, "
        f"`serve.standby_workers` {'as configured' if args.standby is None else f'= {args.standby}'}, "
        "`serve.restart_workers=true`; the active worker is killed; "
        f"1 thread; {placement}. Time to ready at start: {', '.join(f'{x:.1f}' for x in ready)} s.",
        f"{args.clients} clients loop over GET /recommend/{{user_id}} for {args.seconds:.0f} s; the inference "
        f"worker gets SIGKILL at {args.seconds / 2:.0f} s and one more request is sent right after it. "
        f"{args.runs} runs, one row each.",
        "",
        "| requests | failed (status) | worst wait s (any request) | request right after the kill | "
        "/health 503 after | next success after | /health 200 again after | "
        "p50 ms | p99 ms (outside kill−5 s … kill+15 s) | worker replaced |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failed = ", ".join(f"{n} × {s}" for s, n in sorted(r["failed"].items())) or "none"
        probe = r["right_after_kill"]
        lines.append(
            f"| {r['requests']} | {failed} | {r['worst_wait_s']:.2f} | {probe.get('status')} in "
            f"{probe.get('wait_s', float('nan')):.2f} s | {r['health_503_s']:.2f} s | {r['next_success_s']:.2f} s | "
            f"{r['health_back_s']:.2f} s | {r['p50_ms']:.1f} | {r['p99_calm_ms']:.1f} | {r['worker_replaced']} |"
        )
    report(
        "Serving fault run: inference worker killed under load (issues 18, 33)",
        "\n".join(lines),
        not args.no_record,
    )


if __name__ == "__main__":
    main()
