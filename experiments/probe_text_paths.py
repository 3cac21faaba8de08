"""Cheaper MiniLM paths than bf16 autocast, and their cosine to fp32 (issue 6 notes).

Dynamic int8 ``Linear`` layers and bf16 weights, each on the same texts as fp32 and bf16 autocast,
2 threads, printed (not recorded: none of them passes the cosine ≥ 0.999 bar here).

    python experiments/probe_text_paths.py ITEMS_PARQUET [--n 400] [--offset 0]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from sentence_transformers import SentenceTransformer

from recsys.data.text_embeddings import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("items")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    texts = pq.read_table(args.items, columns=["text"])["text"].slice(args.offset, args.n).to_pylist()
    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")

    def run(model, ctx=None) -> tuple[np.ndarray, float]:
        with torch.inference_mode(), ctx or contextlib.nullcontext():
            model.encode(texts[:128], batch_size=64)
            t0 = time.perf_counter()
            emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        return emb.float().numpy(), len(texts) / (time.perf_counter() - t0)

    ref, speed = run(SentenceTransformer(path, device="cpu"))
    print(f"fp32 {speed:.1f} items/s")
    variants = {
        "bf16 autocast": (
            SentenceTransformer(path, device="cpu"),
            torch.autocast("cpu", dtype=torch.bfloat16),
        ),
        "int8 dynamic Linear": (
            torch.ao.quantization.quantize_dynamic(
                SentenceTransformer(path, device="cpu"), {torch.nn.Linear}, dtype=torch.qint8
            ),
            None,
        ),
        "bf16 weights": (SentenceTransformer(path, device="cpu").to(torch.bfloat16), None),
    }
    for name, (model, ctx) in variants.items():
        emb, speed = run(model, ctx)
        cos = (emb * ref).sum(axis=1)
        print(f"{name}: {speed:.1f} items/s, cosine to fp32 mean {cos.mean():.5f} min {cos.min():.5f}")


if __name__ == "__main__":
    main()
