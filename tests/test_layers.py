"""The architecture is enforced: import-linter contracts (pyproject.toml) and a server process
that never loads the training stack."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

TRAINING_STACK = ("lightning", "torchmetrics", "hydra")


def test_import_contracts_hold():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_serving_loads_a_bundle_without_the_training_stack(tiny_bundle):
    code = f"""
import json, sys
from recsys.serving.api import build_server  # the HTTP side
from recsys.serving.graph import InferenceGraph
graph = InferenceGraph.from_bundle({str(tiny_bundle)!r})
user = graph.bundle.users["user_id"].iat[0]
n = len(graph.recommend(user_id=user, top_k=5)["items"])
loaded = {{m.split(".")[0] for m in sys.modules}} & {set(TRAINING_STACK)!r}
print(json.dumps({{"n": n, "loaded": sorted(loaded)}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"n": 5, "loaded": []}
