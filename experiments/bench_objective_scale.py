"""Seed scale: all-position vs last-position training at equal wall time, in one run.

1. `experiment=two_tower_full` (all_positions, one epoch = every training target once) trains;
   its fit time T is read from metrics.json.
2. The same experiment with `model.objective=last_position` (1,024 prefix rows a step, the
   pre-issue-14 recipe) trains for the same T (`trainer.max_time`), so it stops by the clock.
3. Both test on the same users (the first ``--test-batches`` × 256 test rows: the full-catalog
   pass over all 101K users costs ~8 min per model) and the figures are appended to its topic log under experiments/log/.

Text comes from `text_encoder=hashing` by default: MiniLM for 434K items is an hour of
prepare on 2 cores (fp32), and both objectives read the same embeddings either way.

    python experiments/bench_objective_scale.py [--test-batches 40] [--text hashing] [overrides…]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report, run_train

REPO = Path(__file__).resolve().parents[1]
SHOW = ("recall@10", "ndcg@10", "recall@100", "ndcg@100")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="logs/recsys-objective-scale")
    parser.add_argument("--text", default="hashing")
    parser.add_argument("--test-batches", type=int, default=40)
    parser.add_argument(
        "--objectives",
        default="all_positions,last_position",
        help="last_position gets all_positions' fit time",
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    root = f"paths.root_dir={workdir}"
    # two_tower_full sets MiniLM's precision and processes; another encoder takes neither
    text = [] if args.text == "minilm" else ["~text_encoder.precision", "~text_encoder.num_processes"]
    common = [
        "experiment=two_tower_full",
        "trainer.max_steps=-1",  # one whole epoch for all_positions; last_position is cut by the clock
        f"text_encoder={args.text}",
        *text,
        root,
        f"+trainer.limit_test_batches={args.test_batches}",
        *args.extra,
    ]
    runs = {}
    all_pos, wall, command = run_train(
        [*common, "model.objective=all_positions", "data.batch_size=256"], workdir / "all_positions", REPO
    )
    runs["all_positions"] = (all_pos, wall, command)  # prepares the dataset first when missing
    manifest = json.loads((workdir / "data" / "processed" / "synthetic_full" / "manifest.json").read_text())
    budget = round(all_pos["fit_s"])
    max_time = f"00:{budget // 3600:02d}:{budget % 3600 // 60:02d}:{budget % 60:02d}"
    last = [*common, "model.objective=last_position", "data.batch_size=1024", f"trainer.max_time={max_time}"]
    if "last_position" in args.objectives.split(","):
        runs["last_position"] = run_train(last, workdir / "last_position", REPO)

    lines = [
        f"synthetic_full ({manifest['n_catalog_items']:,} items, {manifest['n_users']:,} users, "
        f"{manifest['n_rows']['train']:,} training targets), text `{args.text}`, 2 CPU threads. "
        f"Prepare: {sum(manifest['timings'].values()) / 60:.1f} min (text "
        f"{manifest['timings']['text_embeddings'] / 60:.1f} min). Test: the first "
        f"{args.test_batches * 256:,} test users, the same for both runs, full catalog, seen items excluded.",
        "",
        "| objective | fit s | epochs | steps | stopped by time | precision | "
        + " | ".join(f"retrieval {k}" for k in SHOW)
        + " | popularity ndcg@10 | whole run s |",
        "|---|---|---|---|---|---|" + "---|" * len(SHOW) + "---|---|",
    ]
    for name, (m, wall, _) in runs.items():
        lines.append(
            f"| {name} | {m['fit_s']:.0f} | {m['epochs_done']} | {m['steps_done']} | {m['stopped_by_time']} | "
            f"{m['precision']} | "
            + " | ".join(f"{m['retrieval/' + k]:.4f}" for k in SHOW)
            + f" | {m['popularity/ndcg@10']:.4f} | {wall:.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"- {name}: `{cmd}`" for name, (_, _, cmd) in runs.items()]
    report(
        f"Seed scale: {' vs '.join(runs)}, text `{args.text}` (issues 14, 19)",
        "\n".join(lines),
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
