"""Two CPU processes (gloo) through the real CLI: DDP trains, gathers in-batch negatives across
ranks, and sharded full-catalog evaluation equals a single-process evaluation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # end-to-end: servers, processes, fuzzing (make test-fast skips them)

TINY_DATA = [
    "data=synthetic",
    "text_encoder=hashing",
    "data.preparer.source.generator.n_users=300",
    "data.preparer.source.generator.n_items=400",
    "data.max_history=20",
    "trainer.enable_progress_bar=false",
]


def cli(module: str, root: Path, *overrides: str) -> dict:
    out = root / module.split(".")[-1] / str(abs(hash(overrides)))
    cmd = [sys.executable, "-m", module, f"paths.root_dir={root}", f"paths.output_dir={out}", *overrides]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"out": out, **json.loads((out / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    return cli(
        "recsys.train",
        root,
        *TINY_DATA,
        "experiment=two_tower",
        "model.objective=last_position",  # the objective whose in-batch columns are gathered
        "model.mask_seen=false",  # an all-position option
        "data.batch_size=64",
        "model.dim=32",
        "model.num_global_negatives=64",
        "trainer=ddp_cpu",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "~callbacks.rich_progress_bar",
    )


def _logged(run_dir: Path, key: str) -> list[float]:
    (path,) = run_dir.glob("csv/**/metrics.csv")
    with path.open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_ddp_trains_with_gathered_in_batch_negatives(ddp_run):
    out = ddp_run["out"]
    assert Path(ddp_run["best_checkpoint"]).is_file()
    # 2 ranks x 64 gathered positives + this rank's 64 global negatives per user
    assert set(_logged(out, "train/negative_pool")) == {2 * 64 + 64}
    losses = _logged(out, "train/loss")
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert ddp_run["n_users"] > 200 and 0 < ddp_run["retrieval/recall@100"] <= 1


def test_two_rank_evaluation_equals_one_rank(ddp_run, tmp_path):
    ckpt = f"ckpt_path={ddp_run['best_checkpoint']}"
    one = cli("recsys.evaluate", tmp_path, *TINY_DATA, ckpt)
    two = cli("recsys.evaluate", tmp_path, *TINY_DATA, ckpt, "trainer=ddp_cpu")
    numbers = {k: v for k, v in one.items() if isinstance(v, float)}
    assert len(numbers) > 100
    for key, value in numbers.items():
        assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_ranker_trains_under_ddp(ddp_run, tmp_path):
    metrics = cli(
        "recsys.train",
        tmp_path,
        "experiment=ranker",
        f"retrieval_ckpt={ddp_run['best_checkpoint']}",
        "data.num_candidates=50",
        "data.batch_size=16",
        "model.hidden=[32]",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
    )
    assert 0 <= metrics["two_stage/ndcg@10"] <= 1 and metrics["ranking/auc"] > 0
