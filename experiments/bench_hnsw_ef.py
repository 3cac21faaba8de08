"""HNSW efSearch sweep on an exported bundle: recall@k vs exact search, and single-query latency.

Queries are the bundle's own known-user vectors; exact top-k is a brute-force matmul.

    python experiments/bench_hnsw_ef.py --bundle DIR [--ef 128,192,256,384] [--queries 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report
from recsys.index.faiss_index import ItemIndex


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--ef", default="128,192,256,384")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    bundle = Path(args.bundle)
    index = ItemIndex.load(bundle / "index.faiss")
    items = np.load(bundle / "item_embeddings.npy")
    users = np.load(bundle / "user_embeddings.npy")
    queries = users[np.random.default_rng(1).choice(len(users), min(args.queries, len(users)), replace=False)]
    exact = np.argsort(-(queries @ items.T), axis=1)[:, : args.k] + 2  # item_idx = row + 2
    lines = [
        f"Bundle `{args.bundle}` ({len(items):,} items, d={items.shape[1]}), {len(queries)} known-user queries, "
        f"k={args.k}, 1 thread.",
        "",
        f"| efSearch | recall@{args.k} vs exact | single-query mean ms |",
        "|---|---|---|",
    ]
    for ef in (int(e) for e in args.ef.split(",")):
        index.ef_search = ef
        index._configure()
        t0 = time.perf_counter()
        found = np.concatenate([index.search(q[None], args.k)[1] for q in queries])
        ms = (time.perf_counter() - t0) / len(queries) * 1000
        recall = np.mean([len(np.intersect1d(a, b)) / args.k for a, b in zip(found, exact, strict=True)])
        lines.append(f"| {ef} | {recall:.4f} | {ms:.3f} |")
    report("HNSW efSearch sweep (issue 4)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
