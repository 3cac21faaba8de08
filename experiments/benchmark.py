"""The benchmark suite: `experiment=two_tower` on each dataset × seed, then docs/BENCHMARKS.md.

    python experiments/benchmark.py [--datasets beauty sports toys yelp ml100k] [--seeds 42 43 44]
                                    [--jobs 2] [--table-only] [--stage two]

Each finished run is recorded as one JSON file under ``experiments/results/benchmark/`` (kept in
version control), so the suite resumes where it stopped and the table can be assembled from
runs made in different sessions. The table is generated from those files alone: per dataset,
validation and test ndcg@10 / recall@10 (mean ± sample sd over seeds), popularity in the same
runs, the published rows of ``../shared/data/s3rec/PUBLISHED.md``, wall time, peak memory, the
CPU (model, bf16/avx512/avx2 flags, threads) and the commit. Test is read here and only here.

``--jobs 2`` runs two single-thread runs at once (a 1-thread run repeats to the digit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: stage two's module imports from this package
    sys.path.insert(0, str(REPO))
RESULTS_DIR = REPO / "experiments" / "results" / "benchmark"
RANKER_RESULTS_DIR = REPO / "experiments" / "results" / "benchmark_ranker"  # --stage two
TABLE = REPO / "docs" / "BENCHMARKS.md"
README = REPO / "README.md"
RESULTS_MD = REPO / "experiments" / "RESULTS.md"
GENERATED = ("docs/BENCHMARKS.md", "README.md", "experiments/RESULTS.md")  # regenerated from the results
PUBLISHED = REPO.parent / "shared" / "data" / "s3rec" / "PUBLISHED.md"
BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"

# benchmark name -> (data config, row name in PUBLISHED.md)
DATASETS = {
    "beauty": ("beauty", "Beauty"),
    "sports": ("sports", "Sports_and_Outdoors"),
    "toys": ("toys", "Toys_and_Games"),
    "yelp": ("yelp", "Yelp"),
    "ml100k": ("movielens_100k", None),
}
# what this suite must reach (issue 30): test ndcg@10, mean of the seeds
TARGETS = {"beauty": 0.0531, "sports": 0.0314, "toys": 0.0580, "yelp": 0.0245, "ml100k": 0.125}


def cpu_info() -> dict:
    flags, model = set(), platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
    except (OSError, AttributeError):
        pass
    shown = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in flags]
    return {"model": model, "flags": shown, "cores": os.cpu_count()}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # what the suite and the study scripts write (results, logs, generated tables) is no change to
    # the code a run uses
    own = [f":(exclude){p}" for p in ("experiments/results", "experiments/log", *GENERATED)]
    return commit + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ".", *own) else ""
    )


def result_path(results: Path, name: str, seed: int) -> Path:
    return results / f"{name}_seed{seed}.json"


def command_line(overrides: list[str]) -> str:
    """The command a result records: what a user types (repository-relative paths)."""
    return "python -m recsys.train " + " ".join(shlex.quote(o) for o in overrides)


def train_run(overrides: list[str], out: Path, threads: int) -> float:
    """``python -m recsys.train`` with ``overrides`` into ``out`` (log beside it); its wall seconds."""
    command = command_line(overrides)
    argv = [
        sys.executable,
        "-m",
        "recsys.train",
        *overrides,
        f"paths.output_dir={out}",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def run_one(name: str, seed: int, args: argparse.Namespace) -> Path:
    data, _ = DATASETS[name]
    out = REPO / args.workdir / name / f"seed{seed}"
    overrides = ["experiment=two_tower", f"data={data}", f"seed={seed}", *args.override]
    command = command_line(overrides)
    print(f"[benchmark] {name} seed {seed}: {command}", flush=True)
    commit = git_commit()  # the code the run starts from (edits during the run do not count)
    wall = train_run(overrides, out, args.threads)
    metrics = json.loads((out / "metrics.json").read_text())
    keys = ("ndcg@10", "recall@10")
    record = {
        "dataset": name,
        "seed": seed,
        "command": command,
        "val": {k: metrics.get(f"val/{k}") for k in keys},
        "test": {k: metrics[f"retrieval/{k}"] for k in keys},
        "popularity": {k: metrics[f"popularity/{k}"] for k in keys},
        "n_test_users": metrics["n_users"],
        "n_users_dataset": metrics["n_users_dataset"],
        "n_items": metrics["n_items"],
        "exclude_seen": metrics.get("exclude_seen"),
        "epochs_done": metrics["epochs_done"],
        "precision": metrics["precision"],
        "derived": {k: v for k, v in metrics.items() if k.startswith("derived/")},
        "wall_s": round(wall, 1),
        "fit_s": metrics["fit_s"],
        "peak_rss_gib": metrics.get("peak_rss_gib"),
        "threads": args.threads,
        "cpu": cpu_info(),
        "commit": commit,
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = result_path(REPO / args.results, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a killed suite leaves no half-written result
    # validation only: test is read in the generated table, never while a suite is still choosing
    val = record["val"]["ndcg@10"]
    print(
        f"[benchmark] {name} seed {seed}: val ndcg@10 {val if val is None else round(val, 4)}, "
        f"{record['epochs_done']} epochs in {wall:.0f} s",
        flush=True,
    )
    return path


def parse_published(path: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Row name -> column -> every (recall@10, ndcg@10) in the cell, from PUBLISHED.md's table;
    {} when absent."""
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = {}
        for column, cell in zip(header[1:], cells[1:], strict=False):
            pairs = re.findall(r"(\d\.\d+)\s*/\s*(\d\.\d+)", cell)
            if pairs:
                row[column] = [(float(r), float(n)) for r, n in pairs]
        rows[cells[0]] = row
    return rows


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {sd:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def load_results(results: Path) -> dict[str, list[dict]]:
    by_dataset: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        by_dataset.setdefault(record["dataset"], []).append(record)
    return by_dataset


def render_table(by_dataset: dict[str, list[dict]], published: dict) -> str:
    lines = [
        "| dataset | seeds | val ndcg@10 | val recall@10 | test ndcg@10 | test recall@10 | test ndcg@10, all users "
        "| popularity ndcg@10 | × popularity | target ndcg@10 | wall s (max) | peak GiB | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in DATASETS if n in by_dataset] + sorted(set(by_dataset) - set(DATASETS)):
        runs = sorted(by_dataset[name], key=lambda r: r["seed"])

        def col(part: str, key: str, runs: list[dict] = runs) -> list[float]:
            return [r[part][key] for r in runs if r[part].get(key) is not None]

        test, pop = col("test", "ndcg@10"), col("popularity", "ndcg@10")
        # over every user of the file (as published figures are): a user whose target item never
        # occurs in training has no test row (the preparer drops such targets), counted as a miss
        everyone = [r["test"]["ndcg@10"] * r["n_test_users"] / r["n_users_dataset"] for r in runs]
        ratio = (
            statistics.mean(test) / statistics.mean(pop) if pop and statistics.mean(pop) > 0 else float("nan")
        )
        target = TARGETS.get(name)
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in runs)} | {_mean_sd(col('val', 'ndcg@10'))} "
            f"| {_mean_sd(col('val', 'recall@10'))} | {_mean_sd(test)} | {_mean_sd(col('test', 'recall@10'))} "
            f"| {_mean_sd(everyone)} | {_mean_sd(pop)} | {ratio:.1f}× | {f'{target:.4f}' if target else '—'} "
            f"| {max(r['wall_s'] for r in runs):.0f} | {max(r['peak_rss_gib'] or 0 for r in runs):.2f} "
            f"| {', '.join(str(r['epochs_done']) for r in runs)} |"
        )
    out = ["\n".join(lines)]
    rows = [(n, published.get(DATASETS[n][1])) for n in by_dataset if n in DATASETS and DATASETS[n][1]]
    rows = [(n, p) for n, p in rows if p]
    if rows:
        columns = list(dict.fromkeys(c for _, p in rows for c in p))
        head = "| dataset | ours (test recall@10 / ndcg@10, all users) | " + " | ".join(columns) + " |"
        body = [head, "|" + "---|" * (len(columns) + 2)]
        for name, pub in rows:
            runs = by_dataset[name]
            share = [r["n_test_users"] / r["n_users_dataset"] for r in runs]  # all users, as published
            ours = (
                f"{statistics.mean(r['test']['recall@10'] * f for r, f in zip(runs, share, strict=True)):.4f} / "
                f"{statistics.mean(r['test']['ndcg@10'] * f for r, f in zip(runs, share, strict=True)):.4f}"
            )
            cells = [
                " ; ".join(f"{r:.4f} / {n:.4f}" for r, n in pub[c]) if c in pub else "—" for c in columns
            ]
            body.append(f"| {name} | {ours} | " + " | ".join(cells) + " |")
        out.append(
            "Published full-ranking figures (HR@10 = recall@10 / NDCG@10, from "
            '`../shared/data/s3rec/PUBLISHED.md`, each cell\'s models in its order; "best found" figures '
            "were selected on test by their authors):\n\n" + "\n".join(body)
        )
    return "\n\n".join(out)


def render_runs(by_dataset: dict[str, list[dict]]) -> str:
    lines = [
        "| dataset | seed | test ndcg@10 | val ndcg@10 | wall s | threads | CPU | precision | commit | command |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in sorted(by_dataset):
        for r in sorted(by_dataset[name], key=lambda r: r["seed"]):
            cpu = f"{r['cpu']['model']} ({', '.join(r['cpu']['flags'])})"
            val = r["val"].get("ndcg@10")
            lines.append(
                f"| {name} | {r['seed']} | {r['test']['ndcg@10']:.4f} | {val:.4f} | {r['wall_s']:.0f} "
                f"| {r['threads']} | {cpu} | {r['precision']} | {r['commit']} | `{r['command']}` |"
            )
    return "\n".join(lines)


def write_report(results: Path, table: Path, ranker_results: Path | None = None) -> str:
    from experiments.benchmark_ranker import render_ranker_runs, render_ranker_table

    by_dataset = load_results(results)
    published = parse_published(PUBLISHED)
    summary = render_table(by_dataset, published)
    rankers = load_results(ranker_results) if ranker_results and ranker_results.is_dir() else {}
    ranker_table = render_ranker_table(rankers, published) if rankers else ""
    stage_two = (
        "\n\n## Stage two: the ranker on these runs\n\n"
        "Each row: the retrieval run above (same dataset and seed), its holdout twin (the recipe "
        "fitted again with `split.skip_last=2`, the same seed) and `experiment=ranker` on the served "
        "checkpoint trained on the twin's lists (`holdout_ckpt=<the twin's checkpoint>`; issue 32's "
        "protocol). Both figures are test over the same users, read here only; the ranker's settings "
        "were chosen on validation (experiments/log/ranker.md). `python experiments/benchmark.py "
        "--stage two`.\n\n"
        f"{ranker_table}\n\n### Stage-two runs\n\n{render_ranker_runs(rankers)}"
        if rankers
        else ""
    )
    text = (
        "# Benchmarks\n\n"
        "Generated by `make benchmark` (`python experiments/benchmark.py`) from the result files in "
        f"`{results.relative_to(REPO) if results.is_relative_to(REPO) else results}`; never edited by hand. "
        "Each row is `python -m recsys.train experiment=two_tower data=<name> seed=<seed>` (the "
        "recipe, values derived from the data as logged under `derived/*` in each result). Test is "
        "computed in every run and read only here; settings are chosen on validation (a gain of at "
        "least two standard errors, summed over the suite). ndcg@10 and recall@10 rank the full "
        "catalog with a user's earlier items excluded (kept for Yelp, `exclude_seen: false`). "
        "Validation is a seeded sample of 4,096 users where a dataset has more (`split.validation_users`), "
        "every user otherwise; the other users' second-to-last interactions are training targets. The "
        "published rows validated every user and trained on none of those; test is the same protocol "
        "(every user's last interaction, ranked after the same history).\n\n"
        f"{summary}\n\n## Runs\n\n{render_runs(by_dataset)}{stage_two}\n"
    )
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(text)
    if ranker_table:  # the README's block shows both stages
        summary += (
            "\n\nStage two: `experiment=ranker` on the same runs (its holdout twin's lists; test over the "
            f"same users; `python experiments/benchmark.py --stage two`):\n\n{ranker_table}"
        )
    return summary


def replace_block(path: Path, block: str) -> None:
    """Put ``block`` between the benchmark markers of ``path`` (README, RESULTS.md)."""
    if not path.is_file():
        return
    text = path.read_text()
    if BEGIN not in text:
        return
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each with cores/jobs threads)")
    parser.add_argument("--threads", type=int, default=None, help="threads a run (default: cores / jobs)")
    parser.add_argument("--results", default=str(RESULTS_DIR.relative_to(REPO)))
    parser.add_argument("--table", default=str(TABLE.relative_to(REPO)))
    parser.add_argument("--workdir", default="logs/benchmark")
    parser.add_argument("--override", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--force", action="store_true", help="run again even when a result exists")
    parser.add_argument("--table-only", action="store_true", help="only regenerate the table")
    parser.add_argument(
        "--stage", choices=("one", "two"), default="one", help="one: retrieval runs; two: the ranker on them"
    )
    parser.add_argument("--ranker-results", default=str(RANKER_RESULTS_DIR.relative_to(REPO)))
    args = parser.parse_args(argv)
    args.threads = args.threads or max((os.cpu_count() or 1) // args.jobs, 1)
    results, ranker_results = REPO / args.results, REPO / args.ranker_results
    if not args.table_only:
        if args.stage == "two":
            from experiments.benchmark_ranker import run_two

            step, done_in = (lambda name, seed: run_two(name, seed, args, ranker_results)), ranker_results
        else:
            step, done_in = (lambda name, seed: run_one(name, seed, args)), results
        todo = [
            (name, seed)
            for name in args.datasets
            for seed in args.seeds
            if args.force or not result_path(done_in, name, seed).exists()
        ]
        print(f"[benchmark] {len(todo)} runs to do, {args.jobs} at a time, {args.threads} thread(s) each")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(step, name, seed) for name, seed in todo]:
                future.result()
    summary = write_report(results, REPO / args.table, ranker_results)
    if Path(args.table).resolve() == TABLE.resolve():  # the shipped table feeds README and RESULTS
        replace_block(README, summary)
        replace_block(RESULTS_MD, summary)
    print(summary)


if __name__ == "__main__":
    main()
