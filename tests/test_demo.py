"""`make demo` end to end on tiny data: the README's main command, its figures and its showcase."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_evaluation_figures
from tests.test_train import TINY

REPO = Path(__file__).resolve().parents[1]
# the training tests' tiny data (the Makefile itself picks data=synthetic)
TINY_DATA = [o for o in TINY if o.startswith(("data.", "text_encoder="))]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_draws_the_figures_and_shows_three_users(tmp_path):
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
    assert_evaluation_figures(sorted((demo / "evaluation").rglob("*.png")))
    assert (demo / "bundle" / "manifest.json").is_file()
    # the showcase: three users with their strategy, then how to serve the bundle
    assert proc.stdout.count("strategy:") == 3
    assert f"make serve BUNDLE={demo}/bundle" in proc.stdout.replace("\n", "")
