"""Where a known-user request's time goes inside the serving graph (no HTTP), per stage.

Each variant runs in its own process (GLIBC_TUNABLES is read at process start): ``plain``,
``hugepages`` with the malloc tunable `python -m recsys.serve` sets for its workers, ``unranked``:
plain, but the ranker run per request on the exported candidates (a bundle written before
``user_candidate_logits.npy``), and ``search``: known users' candidates searched in the index and
ranked as for an anonymous history (a bundle exported with ``known_candidates=false``). 1 thread.
A stage a variant skips reads 0.

    python experiments/probe_serving_graph.py --bundle DIR [--users 1500] [--variants plain,unranked,search]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report, run_child

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "hugepages", "unranked", "search")
STAGES = {
    "retrieval": "retrieval (cached or searched)",
    "features": "ranker features",
    "ranker": "ranker MLP",
}


def child(bundle: str, users: int, warmup: int, variant: str) -> None:
    """Time ``recommend`` and its stages for random known users; print one JSON line."""
    import torch

    import recsys.serving.graph as graph_module
    from recsys.serving.graph import InferenceGraph

    torch.set_num_threads(1)
    graph = InferenceGraph.from_bundle(bundle, threads=1)
    if variant == "search":
        graph.bundle.candidates = None
    elif variant == "unranked" and graph.bundle.candidates is not None:
        graph.bundle.candidates.logits = None
    times: dict[str, list[float]] = {name: [] for name in ("total", *STAGES)}

    def timed(owner, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            times[key].append(time.perf_counter() - t0)
            return out

        setattr(owner, name, wrapper)

    timed(graph, "_candidates", "retrieval")
    timed(graph_module, "candidate_features", "features")
    timed(graph.bundle.ranker, "score_user", "ranker")
    ids = graph.bundle.users["user_id"].astype(str).to_numpy()
    picked = ids[np.random.default_rng(0).choice(len(ids), users + warmup, replace=False)]
    for n, user_id in enumerate(picked):
        if n == warmup:
            for v in times.values():
                v.clear()
        t0 = time.perf_counter()
        graph.recommend(user_id=user_id, top_k=10)
        times["total"].append(time.perf_counter() - t0)
    print(json.dumps({k: float(np.median(v) * 1e3) if v else 0.0 for k, v in times.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--variants", default="plain,unranked,search")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.bundle, args.users, args.warmup, args.child)
        return
    from recsys.serving.process_setup import use_hugepage_malloc

    rows = {}
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"OMP_NUM_THREADS": "1"}
        if variant == "hugepages":
            use_hugepage_malloc(env)
        argv = [
            __file__,
            "--child",
            variant,
            "--bundle",
            args.bundle,
            "--users",
            str(args.users),
            "--warmup",
            str(args.warmup),
        ]
        rows[variant] = run_child(argv, REPO, env)
    lines = [
        f"Bundle `{args.bundle}`; {args.users} random known users after {args.warmup} warm-up requests, "
        "top 10; p50 per request, 1 torch/FAISS thread, in one process (no HTTP).",
        "",
        "| variant | recommend ms | " + " | ".join(f"{d} ms" for d in STAGES.values()) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for variant, r in rows.items():
        lines.append(f"| {variant} | {r['total']:.2f} | " + " | ".join(f"{r[s]:.2f}" for s in STAGES) + " |")
    report("Serving graph stages (issue 5)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
