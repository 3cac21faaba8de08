"""ML-100K ablations of the two-tower model, 3 seeds per row, mean ± sd beside popularity.

Rows: the recipe (`experiment=two_tower data=movielens_100k`: on ML-100K's long histories a GRU
over item-MLP vectors of gated ID+text, an exact softmax over the catalog, accidental hits masked),
then one change each: text off, gate → concat, accidental-hit masking off, and sampled global
negatives (256 / 1024) with and without logQ.
Runs go in parallel (``--jobs``), each one a `python -m recsys.train` process whose command is
recorded.

    python experiments/study_ablation.py [--seeds 42,43,44] [--jobs 1] [--accelerator cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import REPO, STUDIES, append_results, repo_path

ROWS: dict[str, list[str]] = {
    "default": [],
    "no_text": ["model.use_text=false"],
    "concat": ["model.fusion=concat"],
    "no_hit_mask": ["model.mask_accidental_hits=false"],
    "neg256": ["model.softmax=sampled", "model.num_global_negatives=256", "model.logq=none"],
    "neg256_logq": ["model.softmax=sampled", "model.num_global_negatives=256", "model.logq=both"],
    "neg1024": ["model.softmax=sampled", "model.num_global_negatives=1024", "model.logq=none"],
    "neg1024_logq": ["model.softmax=sampled", "model.num_global_negatives=1024", "model.logq=both"],
}
KEYS = ("retrieval/ndcg@10", "retrieval/recall@10", "retrieval/mrr", "retrieval/recall@100")


def command(row: str, seed: int, accelerator: str) -> list[str]:
    extra = [] if accelerator == "cpu" else [f"trainer.accelerator={accelerator}"]
    return [
        "-m", "recsys.train", "experiment=two_tower", "data=movielens_100k", f"seed={seed}", *ROWS[row], *extra,
        "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar",
    ]  # fmt: skip


def run(row: str, seed: int, args) -> dict:
    out = repo_path(args.workdir) / f"{row}_seed{seed}"
    argv = command(row, seed, args.accelerator)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *argv, f"paths.output_dir={out}"], cwd=REPO, capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{row} seed {seed} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"{row:14s} seed={seed} ndcg@10={metrics['retrieval/ndcg@10']:.4f}", flush=True)
    return {"row": row, "seed": seed, "metrics": metrics, "wall_s": time.perf_counter() - t0,
            "command": "python " + " ".join(shlex.quote(a) for a in argv)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch/OMP threads per run")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--workdir", default=f"{STUDIES}/ablation")
    parser.add_argument("--out", help="also write the report body to this file")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    jobs = [(r, int(s)) for r in args.rows.split(",") for s in args.seeds.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run(*job, args), jobs))

    def cell(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    where = "CPU" if args.accelerator == "cpu" else f"{args.accelerator} ({args.jobs} runs at a time)"
    lines = [
        "Protocol: ML-100K, all ratings, stable leave-one-out, full catalog (1,682 items), earlier items "
        f"excluded, ties pessimistic; `experiment=two_tower data=movielens_100k` (derived epochs, early "
        f"stopping on val/ndcg@10, precision `auto`, fp32 scoring). Runs on {where}. Mean ± sd over seeds "
        f"{args.seeds}; popularity is measured in the same runs.",
        "",
        "| row | change | " + " | ".join(KEYS) + " | popularity ndcg@10 | runs |",
        "|---|---|" + "---|" * (len(KEYS) + 2),
    ]
    for row in args.rows.split(","):
        mine = [r["metrics"] for r in results if r["row"] == row]
        change = " ".join(ROWS[row]) or "(default)"
        values = [cell([m[k] for m in mine]) for k in KEYS]
        pop = cell([m["popularity/ndcg@10"] for m in mine])
        lines.append(f"| {row} | `{change}` | " + " | ".join(values) + f" | {pop} | {len(mine)} |")
    lines += ["", "Per-run commands (add `paths.output_dir=…`):", ""]
    lines += [f"- {r['row']} seed {r['seed']} ({r['wall_s']:.0f} s): `{r['command']}`" for r in results]
    body = "\n".join(lines)
    print(body)
    if args.out:
        Path(args.out).write_text(body)
    if not args.no_record:
        script = "python experiments/study_ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        append_results("ML-100K ablations, 3 seeds (issue 7)", script, body, "two_tower_ml100k")


if __name__ == "__main__":
    main()
