"""Where a flat scan stops being faster than the HNSW walk: search time by catalog size.

Random vectors (dim 65: a 64-d model plus the cold-offset coordinate), K = 200 candidates with a
user's 58 seen items excluded, one query at a time on 1 thread, as the serving graph searches;
HNSW as `configs/index/hnsw.yaml` builds it. Chooses `configs/index/auto.yaml`'s `flat_max_items`.

    python experiments/bench_index_size.py [--sizes 3000 12000 20000 50000 100000] [--queries 300]
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
from recsys.index.faiss_index import FlatIndex, HNSWIndex


def search_ms(index, queries: np.ndarray, exclude: list[np.ndarray], k: int) -> float:
    for q in queries[:20]:
        index.search(q[None], k, exclude=exclude)
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], k, exclude=exclude)
    return (time.perf_counter() - start) / len(queries) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 12000, 20000, 50000, 100000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    dim = 65
    queries = rng.standard_normal((args.queries, dim)).astype(np.float32)
    rows = ["| items | flat ms | HNSW (m 32, ef 256, sq8) ms | faster |", "|---|---|---|---|"]
    for n in args.sizes:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        ids = np.arange(2, n + 2, dtype=np.int64)
        exclude = [ids[:58]]
        flat = search_ms(FlatIndex(dim).build(ids, vectors), queries, exclude, args.k)
        hnsw_index = HNSWIndex(dim, m=32, ef_construction=200, ef_search=256, storage="sq8").build(
            ids, vectors
        )
        hnsw = search_ms(hnsw_index, queries, exclude, args.k)
        rows.append(f"| {n:,} | {flat:.3f} | {hnsw:.3f} | {'flat' if flat < hnsw else 'HNSW'} |")
        print(rows[-1], flush=True)
    report("Flat scan vs HNSW by catalog size (issue 33)", "\n".join(rows), record=not args.no_record)


if __name__ == "__main__":
    main()
