"""`make demo` end to end on tiny data: the README's main command, its figures and its showcase."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = [
    "text_encoder=hashing",
    "data.preparer.source.generator.n_users=300",
    "data.preparer.source.generator.n_items=400",
    "data.batch_size=64",
    "data.max_history=20",
]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_draws_the_figures_and_shows_three_users(tmp_path):
    import matplotlib.image

    demo = tmp_path / "demo"
    env = {**os.environ, "RECSYS_ROOT": str(tmp_path)}  # data, logs and caches stay in tmp_path
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "demo",
            f"PYTHON={sys.executable}",
            f"DEMO={demo}",
            f"DEMO_DATA_ARGS={' '.join(TINY_DATA)}",
            "DEMO_TRAIN_ARGS=trainer=fast_dev trainer.max_epochs=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = sorted((demo / "evaluation").rglob("*.png"))
    names = {"curves", "cold_warm", "gate_by_popularity", "recommended_popularity"}
    assert {p.stem for p in figures} == names
    for path in figures:
        height, width, _ = matplotlib.image.imread(path).shape
        assert width >= 500 and height >= 300
    assert (demo / "bundle" / "manifest.json").is_file()
    # the showcase: three users with their strategy, then how to serve the bundle
    assert proc.stdout.count("strategy:") == 3
    assert f"make serve BUNDLE={demo}/bundle" in proc.stdout.replace("\n", "")
