"""experiments/benchmark.py: resumable runs recorded as JSON, and the table generated from them alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments import benchmark
from tests.conftest import REPO_ROOT, SHARED_DATA


def _record(dataset: str, seed: int, test: float, val: float, pop: float) -> dict:
    return {
        "dataset": dataset,
        "seed": seed,
        "command": f"python -m recsys.train experiment=two_tower data={dataset} seed={seed}",
        "val": {"ndcg@10": val, "recall@10": 2 * val},
        "test": {"ndcg@10": test, "recall@10": 2 * test},
        "popularity": {"ndcg@10": pop, "recall@10": 2 * pop},
        "epochs_done": 10,
        "precision": "32-true",
        "wall_s": 100.0 + seed,
        "peak_rss_gib": 1.5,
        "threads": 1,
        "cpu": {"model": "Test CPU", "flags": ["avx2"], "cores": 2},
        "commit": "abc1234",
        "n_test_users": 90,
        "n_users_dataset": 100,
    }


def test_table_from_results_alone(tmp_path):
    for seed, test in ((1, 0.05), (2, 0.06), (3, 0.07)):
        (tmp_path / f"beauty_seed{seed}.json").write_text(
            json.dumps(_record("beauty", seed, test, 0.08, 0.01))
        )
    published = tmp_path / "PUBLISHED.md"
    published.write_text(
        "| dataset | SASRec+SS | best found |\n|---|---|---|\n"
        "| Beauty | 0.0921 / 0.0531 | WEARec 0.1041 / 0.0614, TV-Rec 0.1017 / 0.0608 |\n"
    )
    rows = benchmark.parse_published(published)
    assert rows["Beauty"] == {
        "SASRec+SS": [(0.0921, 0.0531)],
        "best found": [(0.1041, 0.0614), (0.1017, 0.0608)],
    }
    table = benchmark.render_table(benchmark.load_results(tmp_path), rows)
    beauty = next(line for line in table.splitlines() if line.startswith("| beauty |"))
    # mean ± sample sd of 0.05, 0.06, 0.07; 6.0× popularity; max wall 103 s
    assert "| 0.0600 ± 0.0100 |" in beauty and "| 6.0× |" in beauty and "| 103 |" in beauty
    assert "| 0.0531 |" in beauty  # the target beside it
    assert "| 0.0540 ± 0.0090 |" in beauty  # over all users: 90 of 100 had a test row
    assert "| beauty | 0.1080 / 0.0540 | 0.0921 / 0.0531 | 0.1041 / 0.0614 ; 0.1017 / 0.0608 |" in table


def test_replace_block_keeps_the_rest(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{benchmark.BEGIN}\nold\n{benchmark.END}\noutro\n")
    benchmark.replace_block(path, "| new |")
    assert path.read_text() == f"intro\n{benchmark.BEGIN}\n| new |\n{benchmark.END}\noutro\n"


@pytest.mark.slow
def test_tiny_benchmark_run_writes_results_and_table(tmp_path):
    if not (SHARED_DATA / "s3rec" / "Toys_and_Games.txt.gz").is_file():
        pytest.skip(f"S3-Rec files not found under {SHARED_DATA / 's3rec'}")
    args = [
        "--datasets",
        "toys",
        "--seeds",
        "7",
        "--results",
        str(tmp_path / "results"),
        "--table",
        str(tmp_path / "BENCHMARKS.md"),
        "--workdir",
        str(tmp_path / "work"),
        "--override",
        "trainer=fast_dev",
        "model.dim=8",
        f"paths.root_dir={tmp_path}",
        f"paths.shared_data_dir={SHARED_DATA}",
    ]
    run = [sys.executable, "experiments/benchmark.py", *args]
    done = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "toys_seed7.json").read_text())
    assert record["seed"] == 7 and 0 <= record["test"]["ndcg@10"] <= 1 and record["n_items"] > 11_000
    assert record["derived"]["derived/model.softmax"] == "exact" and record["wall_s"] > 0
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| toys | 7 |" in table and "SASRec+SS" in table
    # resumable: a second call finds the result and runs nothing
    again = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "0 runs to do" in again.stdout


def _ranker_record(dataset: str, seed: int, retrieval: float, two_stage: float, wall: float | None) -> dict:
    return {
        "dataset": dataset,
        "seed": seed,
        "commands": [
            "python -m recsys.train experiment=two_tower …",
            "python -m recsys.train experiment=ranker …",
        ],
        "retrieval": {"ndcg@10": retrieval, "recall@10": 2 * retrieval},
        "two_stage": {"ndcg@10": two_stage, "recall@10": 2 * two_stage},
        "wall_s": wall,
        "threads": 1,
        "cpu": {"model": "Test CPU", "flags": ["avx2"], "cores": 2},
        "commit": "abc1234",
    }


def test_stage_two_table_from_results_alone(tmp_path):
    from experiments.benchmark_ranker import render_ranker_runs, render_ranker_table

    for seed, (ret, two, wall) in {1: (0.05, 0.055, None), 2: (0.04, 0.048, 300.0)}.items():
        (tmp_path / f"beauty_seed{seed}.json").write_text(
            json.dumps(_ranker_record("beauty", seed, ret, two, wall))
        )
    published = {"Beauty": {"best found": [(0.1041, 0.0614), (0.1017, 0.0608)]}}
    by_dataset = benchmark.load_results(tmp_path)
    beauty = next(
        line for line in render_ranker_table(by_dataset, published).splitlines() if "| beauty |" in line
    )
    # ratios 1.1 and 1.2 per seed: mean 1.150, sample sd 0.071; the published best beside them;
    # the largest wall time known (seed 1 reused a twin: its time is not known in full)
    assert "| 0.0450 ± 0.0071 | 0.0515 ± 0.0049 | 1.150 ± 0.071× |" in beauty
    assert beauty.endswith("| 0.0614 | 300 |")
    runs = render_ranker_runs(by_dataset)
    assert (
        "| beauty | 1 | 0.0500 | 0.0550 | — |" in runs
        and "; then `python -m recsys.train experiment=ranker" in runs
    )


def test_a_twin_is_reused_only_once_its_fit_finished(tmp_path, monkeypatch):
    from experiments import benchmark_ranker

    fits = []

    def fake_fit(overrides, out, threads):  # what a finished fit leaves: one kept epoch, and last
        fits.append(out)
        (out / "checkpoints").mkdir(parents=True)
        for name in ("epoch_011.ckpt", "last.ckpt"):
            (out / "checkpoints" / name).write_text("x")
        return 12.5

    monkeypatch.setattr(benchmark_ranker, "train_run", fake_fit)
    monkeypatch.setattr(benchmark_ranker, "REPO", tmp_path)
    twin = tmp_path / "holdout_seed42"
    (twin / "checkpoints").mkdir(parents=True)
    (twin / "checkpoints" / "epoch_003.ckpt").write_text("x")  # an interrupted fit: no twin.json
    checkpoint, wall = benchmark_ranker.fitted_twin(twin, ["experiment=two_tower"], 1)
    assert checkpoint.name == "epoch_011.ckpt" and wall == 12.5 and len(fits) == 1
    assert not (twin / "checkpoints" / "epoch_003.ckpt").exists()  # fitted again from scratch
    assert benchmark_ranker.fitted_twin(twin, ["experiment=two_tower"], 1) == (checkpoint, 12.5)
    assert len(fits) == 1  # the finished fit is reused
    (twin / "checkpoints" / "epoch_013.ckpt").write_text("x")
    with pytest.raises(RuntimeError, match="2 epoch checkpoints"):
        benchmark_ranker.twin_checkpoint(twin)
