"""Static text encoder (distilled from MiniLM) vs MiniLM and hashing: speed, agreement, prepare time.

1. Distil the static table into a fresh cache directory (the one-off cost) and encode every item
   text of a prepared dataset's ``items.parquet`` with it (one process, the torch threads there are).
2. On a seeded sample of those texts, encode with MiniLM (fp32), static and hashing, and report
   each one's 10-nearest-neighbour overlap with MiniLM's (how much of the teacher it keeps).
3. Optionally (``--prepare-root``) time a whole ``recsys.prepare`` with ``text_encoder=static``.

    python experiments/bench_static_text.py --items /path/to/processed/synthetic_full/items.parquet \
        [--sample 2000] [--prepare-root logs/recsys-objective-scale --prepare-data synthetic_full]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report
from recsys.data.static_text import StaticTextEncoder
from recsys.data.text_embeddings import HashingTextEncoder, SentenceTransformerEncoder

REPO = Path(__file__).resolve().parents[1]


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (cosine, itself excluded) that a and b agree on."""

    def knn(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    ka, kb = knn(a), knn(b)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(ka, kb, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", required=True, help="a prepared dataset's items.parquet")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument(
        "--prepare-root", help="paths.root_dir holding data/raw/<data> to prepare with static"
    )
    parser.add_argument("--prepare-data", default="synthetic_full")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    texts = pd.read_parquet(args.items, columns=["text"])["text"].tolist()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as cache:
        encoder = StaticTextEncoder(cache_dir=cache)
        t0 = time.perf_counter()
        encoder.build()
        distill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        static_all = encoder.encode(texts)
        encode_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        sample = [texts[i] for i in rng.choice(len(texts), min(args.sample, len(texts)), replace=False)]
        t0 = time.perf_counter()
        minilm = SentenceTransformerEncoder(precision="fp32").encode(sample)
        minilm_rate = len(sample) / (time.perf_counter() - t0)
        static = encoder.encode(sample)
        hashing = HashingTextEncoder(dim=256).encode(sample)
    lines = [
        f"Items: `{args.items}` ({len(texts):,} texts); torch threads {threads}; 2-core AVX2 CPU, fp32.",
        "",
        "| step | seconds | items/s |",
        "|---|---|---|",
        f"| distil the static table from all-MiniLM-L6-v2 (once, cached) | {distill_s:.1f} | – |",
        f"| encode all {len(texts):,} texts, static | {encode_s:.1f} | {len(texts) / encode_s:,.0f} |",
        f"| **total (distillation + encoding)** | **{distill_s + encode_s:.1f}** | – |",
        f"| MiniLM fp32 on the {len(sample):,}-text sample | {len(sample) / minilm_rate:.1f} | {minilm_rate:,.0f} |",
        "",
        f"10-nearest-neighbour overlap with MiniLM on the sample: static **{knn_overlap(static, minilm):.3f}**, "
        f"hashing {knn_overlap(hashing, minilm):.3f}. All {static_all.shape[0]:,} static rows: dim "
        f"{static_all.shape[1]}, {int((np.linalg.norm(static_all, axis=1) == 0).sum())} zero (no known token).",
    ]
    if args.prepare_root:
        command = [
            sys.executable,
            "-m",
            "recsys.prepare",
            f"data={args.prepare_data}",
            "text_encoder=static",
            f"paths.root_dir={args.prepare_root}",
        ]
        t0 = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        lines += [
            "",
            f"Whole prepare with the static encoder (table cached under the root's data/cache after its own "
            f"first distillation): `{' '.join(command[1:])}`: **{time.perf_counter() - t0:.0f} s**.",
        ]
    report(
        "Static text encoder: speed and agreement with MiniLM (issue 19)",
        "\n".join(lines),
        not args.no_record,
    )


if __name__ == "__main__":
    main()
