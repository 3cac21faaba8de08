"""Stage two of the benchmark suite: `experiment=ranker` on each recorded retrieval run.

    python experiments/benchmark.py --stage two [--datasets beauty toys] [--seeds 42 43 44] [--jobs 2]

For a dataset × seed whose retrieval run is recorded (``experiments/results/benchmark``, its run
directory under ``--workdir`` with the best checkpoint in metrics.json), the ranker's protocol of
issue 32: the retrieval recipe fitted again with each user's served val and test interactions
skipped (``split.skip_last=2``, the same seed; its test targets are the served model's last
training targets), then ``experiment=ranker`` on the served checkpoint with that twin's lists
(``holdout_ckpt=<its best checkpoint>``: the served runs of the suite predate the saved run
configuration that ``holdout_ckpt=auto`` replays). Each finished pair is recorded under
``experiments/results/benchmark_ranker/`` (resumable; a twin whose fit finished, ``twin.json`` in its
directory, is reused, an interrupted one fitted again) and tabulated in docs/BENCHMARKS.md: retrieval and two-stage test figures over the same
users, read only there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from experiments._measure import shown_path
from experiments.benchmark import (
    DATASETS,
    RANKER_RESULTS_DIR,
    REPO,
    _mean_sd,
    command_line,
    cpu_info,
    git_commit,
    result_path,
    train_run,
)

__all__ = ["RANKER_RESULTS_DIR", "render_ranker_runs", "render_ranker_table", "run_two"]
KEYS = ("ndcg@10", "recall@10")


TWIN_RECORD = "twin.json"  # written once a twin's fit has finished: what a resumed suite reuses


def twin_checkpoint(out: Path) -> Path:
    """The twin's selected checkpoint: the one epoch file ``model_checkpoint`` keeps. Several mean
    the directory holds more than one fit: refused, never guessed."""
    found = sorted((out / "checkpoints").glob("epoch_*.ckpt"))
    if len(found) != 1:
        raise RuntimeError(f"{out}: {len(found)} epoch checkpoints, expected one; remove the directory")
    return found[0]


def fitted_twin(out: Path, overrides: list[str], threads: int) -> tuple[Path, float]:
    """The twin's checkpoint and fit seconds: from its record when an earlier suite finished it,
    else fitted now (a directory without a record is an interrupted fit: started again)."""
    record = out / TWIN_RECORD
    if record.is_file():
        done = json.loads(record.read_text())
        return REPO / done["checkpoint"], done["wall_s"]
    if out.exists():
        print(f"[benchmark] {shown_path(out)}: an unfinished twin fit, started again", flush=True)
        out.unlink() if out.is_symlink() else shutil.rmtree(out)
    wall = train_run(overrides, out, threads)
    checkpoint = twin_checkpoint(out)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"checkpoint": shown_path(checkpoint), "command": command_line(overrides), "wall_s": wall})
        + "\n"
    )
    tmp.replace(record)
    return checkpoint, wall


def run_two(name: str, seed: int, args: argparse.Namespace, results: Path) -> Path:
    data, _ = DATASETS[name]
    stage_one = REPO / args.results
    if not result_path(stage_one, name, seed).exists():
        raise FileNotFoundError(
            f"no retrieval result for {name} seed {seed} in {stage_one}: run stage one first"
        )
    served = json.loads((REPO / args.workdir / name / f"seed{seed}" / "metrics.json").read_text())
    served_ckpt = shown_path(served["best_checkpoint"])
    twin_dir = REPO / args.workdir / name / f"holdout_seed{seed}"
    twin_overrides = [
        "experiment=two_tower",
        f"data={data}",
        f"seed={seed}",
        "split.skip_last=2",
        "test=false",
    ]
    commit = git_commit()
    print(f"[benchmark] {name} seed {seed} twin: {command_line(twin_overrides)}", flush=True)
    twin, twin_wall = fitted_twin(twin_dir, twin_overrides, args.threads)
    ranker_dir = REPO / args.workdir / name / f"ranker_seed{seed}"
    ranker_overrides = [
        "experiment=ranker",
        f"retrieval_ckpt={served_ckpt}",
        f"holdout_ckpt={shown_path(twin)}",
        f"seed={seed}",
    ]
    print(f"[benchmark] {name} seed {seed} ranker: {command_line(ranker_overrides)}", flush=True)
    ranker_wall = train_run(ranker_overrides, ranker_dir, args.threads)
    metrics = json.loads((ranker_dir / "metrics.json").read_text())
    record = {
        "dataset": name,
        "seed": seed,
        "commands": [command_line(twin_overrides), command_line(ranker_overrides)],
        "retrieval": {k: metrics[f"retrieval/{k}"] for k in KEYS},
        "two_stage": {k: metrics[f"two_stage/{k}"] for k in KEYS},
        "n_test_users": metrics["n_users"],
        "epochs_done": metrics["epochs_done"],
        "precision": metrics["precision"],
        "wall_s": round(twin_wall + ranker_wall, 1),
        "ranker_wall_s": round(ranker_wall, 1),
        "peak_rss_gib": metrics.get("peak_rss_gib"),
        "threads": args.threads,
        "cpu": cpu_info(),
        "commit": commit,
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = result_path(results, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    print(f"[benchmark] {name} seed {seed}: ranker recorded ({ranker_wall:.0f} s)", flush=True)
    return path


def render_ranker_table(by_dataset: dict[str, list[dict]], published: dict) -> str:
    """Per dataset: retrieval and two-stage test figures over the same users (mean ± sample sd over
    seeds), the ratio of the two per seed, and the published "best found" ndcg@10 beside them."""
    lines = [
        "| dataset | seeds | retrieval test ndcg@10 | two-stage test ndcg@10 | two-stage / retrieval "
        "| retrieval test recall@10 | two-stage test recall@10 | best found ndcg@10 (published) "
        "| wall s (max, twin + ranker) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in DATASETS if n in by_dataset] + sorted(set(by_dataset) - set(DATASETS)):
        runs = sorted(by_dataset[name], key=lambda r: r["seed"])
        ratios = [r["two_stage"]["ndcg@10"] / r["retrieval"]["ndcg@10"] for r in runs]
        ratio = f"{statistics.mean(ratios):.3f}" + (
            f" ± {statistics.stdev(ratios):.3f}" if len(ratios) > 1 else ""
        )
        best = (published.get(DATASETS.get(name, (None, None))[1] or "") or {}).get("best found")
        walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        best_cell = f"{max(n for _, n in best):.4f}" if best else "—"
        wall_cell = f"{max(walls):.0f}" if walls else "—"
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {_mean_sd([r['retrieval']['ndcg@10'] for r in runs])} "
            f"| {_mean_sd([r['two_stage']['ndcg@10'] for r in runs])} | {ratio}× "
            f"| {_mean_sd([r['retrieval']['recall@10'] for r in runs])} "
            f"| {_mean_sd([r['two_stage']['recall@10'] for r in runs])} | {best_cell} | {wall_cell} |"
        )
    return "\n".join(lines)


def render_ranker_runs(by_dataset: dict[str, list[dict]]) -> str:
    lines = [
        "| dataset | seed | retrieval ndcg@10 | two-stage ndcg@10 | wall s | threads | CPU | commit | commands |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(by_dataset):
        for r in sorted(by_dataset[name], key=lambda r: r["seed"]):
            cpu = f"{r['cpu']['model']} ({', '.join(r['cpu']['flags'])})"
            wall = "—" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"
            lines.append(
                f"| {name} | {r['seed']} | {r['retrieval']['ndcg@10']:.4f} | {r['two_stage']['ndcg@10']:.4f} "
                f"| {wall} | {r['threads']} | {cpu} | {r['commit']} | "
                + "; then ".join(f"`{c}`" for c in r["commands"])
                + " |"
            )
    return "\n".join(lines)
