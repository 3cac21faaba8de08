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

`--split val` runs validation instead, on the data of the run's own `config.yaml` (next to its
`checkpoints/`): where validation holds cold targets (`cold_items=holdout`), that is where b is
chosen; test is not read.
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

from experiments._measure import report, table_lines

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


VAL_KEYS = {
    "val ndcg@10": ("all", "ndcg@10"),
    "val recall@50": ("all", "recall@50"),
    "val warm ndcg@10": ("warm", "ndcg@10"),
    "val cold ndcg@10": ("cold", "ndcg@10"),
    "val cold recall@50": ("cold", "recall@50"),
}


def validate(ckpt: Path, offsets: list[float]) -> list[dict]:
    """Validation metrics by segment of ``ckpt`` at each offset (the run's data, one process)."""
    import hydra
    import lightning as L
    from omegaconf import OmegaConf

    from recsys.models.two_tower_module import TwoTowerModule

    cfg = OmegaConf.load(ckpt.parent.parent / "config.yaml")
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    out = []
    for offset in offsets:
        model = TwoTowerModule.load_from_checkpoint(
            ckpt, dataset_dir=str(datamodule.processed_dir), weights_only=True, cold_score_offset=offset
        )
        trainer.validate(model, datamodule=datamodule, verbose=False)
        segments = model.evaluator.val_segments  # a segment without users is absent
        out.append(
            {k: segments.get(s, {}).get(m, float("nan")) for k, (s, m) in VAL_KEYS.items()}
            | {"n_users": segments["all"]["n_users"], "n_cold": segments.get("cold", {}).get("n_users", 0)}
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoints", nargs="+", required=True, help="two-tower checkpoints (one per seed)"
    )
    parser.add_argument("--seeds", help="the seed each checkpoint was trained with (test)")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--offsets", default="0,0.05,0.1,0.15,0.2")
    parser.add_argument("--experiment", default="two_tower")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for recsys.evaluate")
    args = parser.parse_args()
    overrides = [f"experiment={args.experiment}", *args.extra]
    offsets = [float(b) for b in args.offsets.split(",")]
    if args.split == "val":
        return validation_table(list(map(Path, args.checkpoints)), offsets, args.no_record)
    if not args.seeds:
        parser.error("--seeds is required with --split test")
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


def validation_table(checkpoints: list[Path], offsets: list[float], no_record: bool) -> None:
    rows = []
    for ckpt in checkpoints:
        for offset, m in zip(offsets, validate(ckpt, offsets), strict=True):
            rows.append((ckpt, offset, m))
            print(json.dumps({"ckpt": str(ckpt), "offset": offset, **m}))
    m0 = rows[0][2]
    lines = [
        f"{len(checkpoints)} checkpoint(s) × offsets {','.join(f'{b:g}' for b in offsets)}, validation only; "
        f"{m0['n_cold']:.0f} of {m0['n_users']:.0f} val users have a cold target; "
        f"{os.environ.get('OMP_NUM_THREADS', 'all')} CPU thread(s).",
        "",
        *table_lines(
            ["checkpoint", "offset", *VAL_KEYS],
            [
                [f"{ckpt.parent.parent.name}/{ckpt.name}", f"{offset:g}", *(f"{m[k]:.4f}" for k in VAL_KEYS)]
                for ckpt, offset, m in rows
            ],
        ),
        "",
        "Mean ± standard error over checkpoints:",
        "",
    ]
    summary = []
    for offset in offsets:
        cells = [np.array([m[k] for _, b, m in rows if b == offset]) for k in VAL_KEYS]
        summary.append(
            [f"{offset:g}"]
            + [
                f"{c.mean():.4f} ± {c.std(ddof=1) / np.sqrt(len(c)) if len(c) > 1 else 0.0:.4f}"
                for c in cells
            ]
        )
    lines += table_lines(["offset", *VAL_KEYS], summary)
    report("Cold score offset on validation (issue 32)", "\n".join(lines), record=not no_record)


if __name__ == "__main__":
    main()
