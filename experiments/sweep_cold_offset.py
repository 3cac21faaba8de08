"""The cold_score_offset trade-off on trained two-towers: cold-target vs warm-target figures (issue 15).

`model.cold_score_offset` shifts the score of every text-only item (never trained, or added at
serving) and leaves the weights alone, so one trained checkpoint is evaluated at several offsets
with `python -m recsys.evaluate cold_score_offset=b` (the same test code as training's). Validation
cannot pick b where it holds no cold targets (synthetic's fresh releases are test targets only):
b is a product choice, how much of a list new items may take, and this table is what it costs.

    python experiments/sweep_cold_offset.py --seeds 42,43,44 \
        --checkpoints logs/recsys-study-offset/synthetic/catalog_seed4{2,3,4}/checkpoints/epoch_*.ckpt

Each checkpoint is evaluated with the seed it was trained with (`--seeds`, in the same order):
synthetic data is generated per seed, so the evaluation prepares that seed's dataset again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    "ndcg@10": "retrieval/ndcg@10",
    "warm ndcg@10": "retrieval_warm/ndcg@10",
    "warm recall@100": "retrieval_warm/recall@100",
    "cold recall@10": "retrieval_cold/recall@10",
    "cold recall@100": "retrieval_cold/recall@100",
    "cold recall@500": "retrieval_cold/recall@500",
}


def evaluate(ckpt: Path, offset: float, overrides: list[str]) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory() as out:
        args = ["-m", "recsys.evaluate", *overrides, f"ckpt_path={ckpt}", f"cold_score_offset={offset:g}"]
        args += ["figures=false", f"paths.output_dir={out}"]
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{ckpt} at offset {offset:g} failed:\n{proc.stderr[-3000:]}")
        command = "python " + " ".join(shlex.quote(a) for a in args if not a.startswith("paths.output_dir"))
        return json.loads((Path(out) / "metrics.json").read_text()), command


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoints", nargs="+", required=True, help="two-tower checkpoints (one per seed)"
    )
    parser.add_argument("--seeds", required=True, help="the seed each checkpoint was trained with")
    parser.add_argument("--offsets", default="0,0.05,0.1,0.15,0.2")
    parser.add_argument("--experiment", default="two_tower")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for recsys.evaluate")
    args = parser.parse_args()
    overrides = [f"experiment={args.experiment}", *args.extra]
    offsets = [float(b) for b in args.offsets.split(",")]
    seeds = args.seeds.split(",")
    if len(seeds) != len(args.checkpoints):
        parser.error(f"{len(args.checkpoints)} checkpoints but {len(seeds)} seeds")
    rows, commands = [], []
    for ckpt, seed in zip(map(Path, args.checkpoints), seeds, strict=True):
        for offset in offsets:
            m, command = evaluate(ckpt, offset, [*overrides, f"seed={seed}"])
            rows.append((ckpt, offset, m))
            commands.append(command)
            print(json.dumps({"ckpt": str(ckpt), "offset": offset, **{k: m.get(v) for k, v in KEYS.items()}}))
    m0 = rows[0][2]
    lines = [
        f"{len(args.checkpoints)} checkpoint(s) × offsets {args.offsets}; {m0.get('retrieval_cold/n_users', 0):.0f} of "
        f"{m0['retrieval/n_users']:.0f} test users have a cold target, {m0['n_items']:,} items (random recall@100 = "
        f"{100 / m0['n_items']:.4f}); {os.environ.get('OMP_NUM_THREADS', 'all')} CPU thread(s).",
        "",
        "| checkpoint | offset | " + " | ".join(KEYS) + " |",
        "|---|---|" + "---|" * len(KEYS),
    ]
    for ckpt, offset, m in rows:
        cells = " | ".join(f"{m.get(v, float('nan')):.4f}" for v in KEYS.values())
        lines.append(f"| {ckpt.parent.parent.name}/{ckpt.name} | {offset:g} | {cells} |")
    lines += ["", "Mean ± std over checkpoints:", "", "| offset | " + " | ".join(KEYS) + " |"]
    lines.append("|---|" + "---|" * len(KEYS))
    for offset in offsets:
        ms = [m for _, b, m in rows if b == offset]
        cells = [np.array([m.get(v, np.nan) for m in ms]) for v in KEYS.values()]
        lines.append(f"| {offset:g} | " + " | ".join(f"{c.mean():.4f} ± {c.std():.4f}" for c in cells) + " |")
    lines += ["", "Commands:", "", *(f"- `{c}`" for c in commands)]
    report("Cold score offset sweep (issue 15)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
