"""Run a stage in a child process and report its wall time and peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parents[1]
LOG = RESULTS.parent / "log"
# which topic log under experiments/log/ each script's records go to (experiments/RESULTS.md indexes them)
SCRIPT_TOPICS = {
    "study_ml100k": "two_tower_ml100k",
    "study_ablation": "two_tower_ml100k",
    "bench_two_tower": "two_tower_ml100k",
    "study_ranker": "ranker",
    "oracle_synthetic": "ranker",
    "study_cold_items": "cold_items",
    "sweep_cold_offset": "cold_items",
    "study_cold_policy": "cold_items",
    "bench_serving": "serving",
    "probe_serving_graph": "serving",
    "check_serving_split": "serving",
    "bench_index": "index",
    "bench_hnsw_ef": "index",
    "bench_index_size": "index",
    "bench_prepare": "scale",
    "bench_scale": "scale",
    "bench_objective_scale": "scale",
    "bench_static_text": "scale",
    "probe_precision": "scale",
    "probe_catalog_softmax": "benchmark",
    "check_gpu": "scale",
}
STUDIES = "logs/studies"  # the study scripts' default workdirs: in the repository (gitignored)


def repo_path(path: str | Path) -> Path:
    """``path`` as given, under the repository when relative: studies run their children there."""
    path = Path(path)
    return path if path.is_absolute() else REPO / path


def shown_path(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside: how a recorded command names it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def run_child(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``python argv…``; the child prints one JSON line last; add wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stage {argv} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(wall, 2)
    return result


def run_train(overrides: list[str], out: Path, cwd: Path, reuse: bool = False) -> tuple[dict, float, str]:
    """One ``python -m recsys.train`` run writing into ``out``: (metrics.json, wall s, command).

    The recorded command leaves out the output dir (a scratch path) and keeps everything else.
    ``reuse``: a finished run in ``out`` (its metrics.json, its recorded wall time) is read back
    instead of trained again, so a study can add rows to runs it already made.
    """
    import shlex

    args = [
        "-m",
        "recsys.train",
        *overrides,
        f"paths.output_dir={out}",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
    ]
    command = "python " + " ".join(shlex.quote(a) for a in args if not a.startswith("paths.output_dir"))
    done = out / "metrics.json"
    if reuse and done.exists() and (out / "wall_s.txt").exists():
        return json.loads(done.read_text()), float((out / "wall_s.txt").read_text()), command
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    (out / "wall_s.txt").write_text(f"{wall:.1f}")
    return json.loads(done.read_text()), wall, command


def reprepare(overrides: list[str], ckpt: str, cwd: Path) -> None:
    """Prepare a reused run's dataset again (its seed's, e.g. synthetic data is generated per seed
    into one directory) by evaluating its checkpoint, before stage two reads that directory."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        args = [
            "-m",
            "recsys.evaluate",
            *overrides,
            f"ckpt_path={ckpt}",
            "figures=false",
            f"paths.output_dir={out}",
        ]
        proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"re-preparing for {ckpt} failed:\n{proc.stderr[-3000:]}")


def table_lines(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its rule and one line a row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def report(title: str, body: str, record: bool = True) -> None:
    """Print ``body`` and append it, under ``title`` with the command that ran, to the script's
    topic log (``SCRIPT_TOPICS``)."""
    import shlex

    print(body)
    if record:
        script = Path(sys.argv[0]).resolve().relative_to(REPO)
        command = " ".join(["python", str(script), *(shlex.quote(a) for a in sys.argv[1:])])
        append_results(title, command, body, SCRIPT_TOPICS.get(script.stem, "misc"))


def append_results(title: str, command: str, body: str, topic: str = "misc") -> Path:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = f"\n## {title} ({stamp})\n\nCommand: `{command}`\n\n{body.rstrip()}\n"
    path = LOG / f"{topic}.md"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {topic}\n\nEvery figure below was printed by the command shown above it.\n")
    with path.open("a") as fh:
        fh.write(text)
    return path
