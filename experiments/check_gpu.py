"""GPU smoke check of the training paths (CI has no GPU): two-tower (dense and sparse ID
gradients) with bf16, `trainer=ddp` (NCCL), the ranker, and full-catalog evaluation on the GPU
against the same checkpoint evaluated on the CPU.

    python experiments/check_gpu.py [--workdir logs/recsys-gpu] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = ["data=synthetic", "text_encoder=hashing"]
QUIET = ["trainer.enable_progress_bar=false"]


def run(module: str, out: Path, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", module, f"paths.output_dir={out}", *QUIET, *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ok": False, "wall_s": round(wall, 1), "error": proc.stderr[-2500:]}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"ok": True, "wall_s": round(wall, 1), "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="logs/recsys-gpu")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.workdir)
    common = [*DATA, f"paths.root_dir={root}", "~callbacks.rich_progress_bar"]
    gpu = ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed", f"trainer.max_epochs={args.epochs}"]
    results = {
        "two_tower_gpu": run("recsys.train", root / "tt", "experiment=two_tower", *common, *gpu),
        "two_tower_gpu_sparse": run(
            "recsys.train",
            root / "tt_sparse",
            "experiment=two_tower",
            *common,
            *gpu,
            "model.sparse_embeddings=true",
        ),
        "two_tower_ddp_nccl": run(
            "recsys.train",
            root / "tt_ddp",
            "experiment=two_tower",
            *common,
            "trainer=ddp",
            f"trainer.max_epochs={args.epochs}",
        ),
    }
    first = results["two_tower_gpu"]
    if first["ok"]:
        ckpt = first["metrics"]["best_checkpoint"]
        results["ranker_gpu"] = run(
            "recsys.train",
            root / "ranker",
            "experiment=ranker",
            f"retrieval_ckpt={ckpt}",
            f"paths.root_dir={root}",
            "~callbacks.rich_progress_bar",
            "trainer.accelerator=gpu",
            "trainer.max_epochs=5",
        )
        evals = {
            device: run(
                "recsys.evaluate",
                root / f"eval_{device}",
                *DATA,
                f"paths.root_dir={root}",
                f"ckpt_path={ckpt}",
                f"trainer.accelerator={device}",
            )
            for device in ("gpu", "cpu")
        }
        results.update({f"evaluate_{d}": r for d, r in evals.items()})
        if all(r["ok"] for r in evals.values()):
            a, b = evals["gpu"]["metrics"], evals["cpu"]["metrics"]
            diffs = {k: abs(a[k] - b[k]) for k in a if isinstance(a[k], float) and k in b}
            results["gpu_vs_cpu_eval"] = {
                "max_abs_diff": max(diffs.values()),
                "worst": max(diffs, key=diffs.get),
            }
    summary = {}
    for name, r in results.items():
        if "ok" not in r:
            summary[name] = r
            continue
        m = r.get("metrics", {})
        keep = {k: m[k] for k in ("retrieval/ndcg@10", "two_stage/ndcg@10", "popularity/ndcg@10") if k in m}
        summary[name] = {
            "ok": r["ok"],
            "wall_s": r["wall_s"],
            **keep,
            **({"error": r["error"]} if not r["ok"] else {}),
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
