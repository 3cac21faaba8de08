"""python -m recsys.serve bundle=DIR [port=8000] [host=127.0.0.1]: serve a bundle with LitServe."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recsys.utils.hydra_helpers import CONFIG_PATH

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


def serve(cfg: DictConfig) -> None:
    from recsys.serving.api import build_server
    from recsys.serving.cpu_affinity import pin_http_side

    bundle = Path(cfg.bundle)
    if not (bundle / "manifest.json").is_file():
        print(
            f"No serving bundle at {bundle}.\n"
            "Make one with `make demo` (small synthetic data, ~10 min on 2 cores), or export your own:\n"
            "  python -m recsys.export retrieval_ckpt=<two-tower ckpt> ranker_ckpt=<ranker ckpt> "
            "bundle_dir=DIR\n"
            "then `make serve BUNDLE=DIR`.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    use_hugepage_malloc()
    worker_cpus = pin_http_side(cfg.workers, cfg.threads) if cfg.pin_cpus else None
    server = build_server(
        bundle,
        max_top_k=cfg.max_top_k,
        min_history=cfg.min_history,
        workers=cfg.workers,
        threads=cfg.threads,
        timeout=cfg.timeout,
        max_payload_bytes=cfg.max_payload_bytes,
        worker_cpus=worker_cpus,
    )
    server.run(host=cfg.host, port=cfg.port, generate_client_file=False, log_level=cfg.log_level)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
