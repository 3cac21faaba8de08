"""Index benchmark: flat vs hnsw vs ivf over a trained two-tower's catalog, and the export.

Queries are the model's own user embeddings (val rows), so recall is measured on the
distribution the index serves. Recall@k of an ANN index = |ANN top-k ∩ exact top-k| / k.

    python experiments/bench_index.py --ckpt CKPT [--queries 2000] [--threads 1] [--bundle-dir DIR]
        [--backends flat,hnsw,hnsw_fp16,hnsw_sq8,ivf] [--k 100]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report
from recsys.candidates.settings import CandidateSettings
from recsys.data.datamodules import RaggedRows
from recsys.index.faiss_index import ItemIndex
from recsys.models.exported_nets import exported_nets
from recsys.models.two_tower_module import TwoTowerModule
from recsys.serving.bundle_writer import BundleParts, write_bundle


def configured(kind: str, dim: int, *overrides: str) -> ItemIndex:
    """The index as ``configs/index/<kind>.yaml`` builds it (plus overrides), for ``dim``-d vectors."""
    import hydra
    from hydra import compose, initialize_config_dir

    from recsys.utils.hydra_helpers import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="export", overrides=[f"index={kind}", *overrides])
    return hydra.utils.instantiate(cfg.index, dim=dim)


def configured_candidates() -> CandidateSettings:
    """A retrieval-only bundle's candidate settings, as `recsys.export` takes them from its config."""
    from hydra import compose, initialize_config_dir

    from recsys.utils.hydra_helpers import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="export", overrides=["retrieval_ckpt=unused"])
    return CandidateSettings.from_dict(cfg.candidates)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def user_queries(model: TwoTowerModule, n: int, seed: int) -> np.ndarray:
    dataset = model._dataset
    rows = RaggedRows.from_split(dataset, "val", dataset.manifest["config"].get("max_history"))
    pick = np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False)
    out = []
    with torch.no_grad():
        for lo in range(0, len(pick), 512):
            batch = rows[pick[lo : lo + 512].tolist()]
            out.append(model.encode_users(batch["history"], batch["lengths"]).float().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch + FAISS threads (serving uses 1)")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--bundle-dir", default=None, help="also time a full export (hnsw) into this dir")
    parser.add_argument(
        "--backends", default="flat,hnsw,ivf", help="comma list starting with flat; also hnsw_fp16, hnsw_sq8"
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.build_threads)
    faiss.omp_set_num_threads(args.build_threads)

    model = TwoTowerModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
    t0 = time.perf_counter()
    catalog = model.encode_catalog()[2:].numpy()
    encode_s = time.perf_counter() - t0
    ids = np.arange(2, 2 + len(catalog), dtype=np.int64)
    queries = user_queries(model, args.queries, seed=0)
    n, d = catalog.shape

    export_line, prebuilt = "", {}
    if args.bundle_dir:  # the export builds the hnsw index: measure that one instead of building twice
        faiss.omp_set_num_threads(args.build_threads)
        out = Path(args.bundle_dir)
        t0 = time.perf_counter()
        parts = BundleParts(**exported_nets(args.ckpt), settings=configured_candidates())
        if parts.retrieval_config and parts.retrieval_config.get("cold_score_offset"):
            raise SystemExit(
                "bench_index measures the plain inner-product index: use a checkpoint without cold_score_offset"
            )
        manifest = write_bundle(out, parts, configured("hnsw", d))
        export_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.iterdir()) / 2**30
        prebuilt["hnsw"] = (ItemIndex.load(out / "index.faiss"), manifest["timings"]["index_build"])
        export_line = (
            f"Full export with hnsw (`write_bundle`): {export_s:.1f} s, bundle {size:.2f} GiB on disk; "
            f"phases (s): {manifest['timings']}."
        )

    choices = {
        "flat": lambda: configured("flat", d),
        "hnsw": lambda: configured("hnsw", d, "index.storage=flat"),
        "hnsw_fp16": lambda: configured("hnsw", d, "index.storage=fp16"),
        "hnsw_sq8": lambda: configured("hnsw", d, "index.storage=sq8"),
        "ivf": lambda: configured("ivf", d),
    }
    names = args.backends.split(",")
    if names[0] != "flat" or not set(names) <= set(choices):
        raise SystemExit(f"--backends: start with flat (the exact reference), then any of {sorted(choices)}")
    backends = {name: choices[name]() for name in names}
    results, exact = {}, None
    for name, index in backends.items():
        faiss.omp_set_num_threads(args.build_threads)
        if name in prebuilt:
            index, build_s = prebuilt[name]
        else:
            t0 = time.perf_counter()
            index.build(ids, catalog)
            build_s = time.perf_counter() - t0
        size = len(faiss.serialize_index(index.index))
        faiss.omp_set_num_threads(args.threads)
        lat = []
        for q in queries[:500]:
            t0 = time.perf_counter()
            index.search(q[None], args.k)
            lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        found = np.concatenate(
            [index.search(queries[i : i + 64], args.k)[1] for i in range(0, len(queries), 64)]
        )
        batch_qps = len(queries) / (time.perf_counter() - t0)
        if exact is None:
            exact = found
        recall = np.mean([len(np.intersect1d(a, b)) / args.k for a, b in zip(found, exact, strict=True)])
        results[name] = {
            "build_s": build_s,
            "size_mib": size / 2**20,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "batch_qps": batch_qps,
            "recall": float(recall),
            "params": index.params(),
        }
        print(name, results[name], flush=True)

    lines = [
        f"Catalog {n:,} items × d={d} (`{args.ckpt}`); {len(queries):,} val-user queries; k={args.k}. "
        f"Build with {args.build_threads} threads; search with {args.threads} thread(s). "
        f"Catalog encoding through the item tower: {encode_s:.1f} s.",
        "",
        f"| index | params | build s | size MiB | single-query p50 ms | p95 ms | batch-64 queries/s | recall@{args.k} vs flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "dim")
        lines.append(
            f"| {name} | {params or '-'} | {r['build_s']:.1f} | {r['size_mib']:.0f} | {r['p50_ms']:.3f} | "
            f"{r['p95_ms']:.3f} | {r['batch_qps']:,.0f} | {r['recall']:.4f} |"
        )
    lines += ["", f"Peak RSS of the benchmark process: {peak_rss_gib():.2f} GiB."]
    if export_line:
        lines.append(export_line)
    report("Index benchmark (issue 4)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
