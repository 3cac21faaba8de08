"""Every file in configs/experiment/ composes and trains for a step on tiny data (its data group
replaced by the tiny synthetic set, its text encoder by hashing; the rest as the file says)."""

from __future__ import annotations

import math

import pytest
from omegaconf import open_dict

from recsys.train import train
from recsys.utils.hydra_helpers import CONFIG_PATH
from tests.conftest import compose_config
from tests.test_train import TINY

EXPERIMENT_DIR = __import__("pathlib").Path(CONFIG_PATH) / "experiment"
EXPERIMENTS = sorted(
    str(p.relative_to(EXPERIMENT_DIR).with_suffix("")) for p in EXPERIMENT_DIR.rglob("*.yaml")
)
ONE_STEP = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def test_every_experiment_file_is_listed():
    assert {"two_tower", "two_tower_full", "ranker"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_a_step_on_tiny_data(name, trained, tmp_path):
    root = [f"paths.root_dir={trained['root']}", f"paths.output_dir={tmp_path}/out"]
    if name.startswith("ranker"):
        overrides = [
            f"retrieval_ckpt={trained['retrieval']}",
            "data.num_candidates=20",
            "data.batch_size=16",
            "model.hidden=[16]",
            "~callbacks.rich_progress_bar",
        ]
    else:  # the tiny synthetic set of the session's stage-two fixture (prepared once)
        overrides = [o for o in TINY if o != "trainer=fast_dev"]
    cfg = compose_config("train", [f"experiment={name}", *root, *overrides, *ONE_STEP])
    stride = cfg.data.get("window_stride")
    if stride and stride > cfg.data.max_history:  # the tiny set's windows are shorter (20)
        cfg.data.window_stride = cfg.data.max_history // 2
    if cfg.get("derive"):  # the recipe derives its epochs from the data: one epoch stays one here
        with open_dict(cfg):
            cfg.derive.keep = ["trainer.max_epochs"]
    metrics = train(cfg)
    assert metrics["steps_done"] == 1
    key = "two_stage/ndcg@10" if name.startswith("ranker") else "retrieval/ndcg@10"
    assert 0.0 <= metrics[key] <= 1.0 and not math.isnan(metrics[key])
