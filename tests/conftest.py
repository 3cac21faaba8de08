from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from recsys.utils.hydra_helpers import CONFIG_PATH

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ML100K = SHARED_DATA / "ml-100k"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    return ML100K


EVALUATION_FIGURES = {"curves", "cold_warm", "gate_by_popularity", "recommended_popularity"}


def assert_evaluation_figures(paths: list[Path]) -> None:
    """``recsys.evaluate``'s four PNGs, each readable and at least 500 x 300 pixels."""
    import matplotlib.image

    assert {Path(p).stem for p in paths} == EVALUATION_FIGURES
    for path in paths:
        height, width, _ = matplotlib.image.imread(path).shape
        assert width >= 500 and height >= 300


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def run_train_cli(args: list[str], timeout: int = 900, **env: str):
    """``python -m recsys.train *args`` in a child process from the repository; asserts it exited 0."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "recsys.train", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def two_tower_module(dataset_dir: str | Path, **overrides):
    """A TwoTowerModule with configs/model/two_tower.yaml's values (the one home of its defaults)
    and ``overrides``."""
    import hydra

    build = hydra.utils.instantiate(compose_config("train", []).model, _partial_=True)
    return build(dataset_dir=str(dataset_dir), **overrides)  # the constructor's own errors, unwrapped


def candidate_datamodule(retrieval_ckpt: str | Path, **overrides):
    """A CandidateDataModule with configs/data/candidates.yaml's values and ``overrides``."""
    import hydra

    # holdout_ckpt: none unless a test passes one (experiment=ranker's `auto` is resolved by train)
    cfg = compose_config(
        "train", ["experiment=ranker", f"retrieval_ckpt={retrieval_ckpt}", "holdout_ckpt=null"]
    )
    return hydra.utils.instantiate(cfg.data, _partial_=True)(**overrides)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One text-embedding cache for the whole session, so each text is encoded once."""
    return tmp_path_factory.mktemp("embedding_cache")


# ---------------------------------------------------------------- stage two on tiny synthetic data
K = 50  # candidates per user in the tiny two-stage runs


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny two-tower checkpoint, and a ranker trained on its candidates (full test pass)."""
    from recsys.train import train
    from tests.test_train import TINY

    root = tmp_path_factory.mktemp("stage2")
    common = [f"paths.root_dir={root}", "trainer=fast_dev"]
    train(compose_config("train", [*common, *TINY, f"paths.output_dir={root}/tt", "trainer.max_epochs=2"]))
    ckpt = root / "tt" / "checkpoints" / "last.ckpt"
    metrics = train(
        compose_config(
            "train",
            [
                *common,
                "experiment=ranker",
                f"retrieval_ckpt={ckpt}",
                f"paths.output_dir={root}/ranker",
                f"data.num_candidates={K}",
                "data.batch_size=16",
                "trainer.limit_test_batches=1.0",
                "model.hidden=[32]",
                "~callbacks.rich_progress_bar",
            ],
        )
    )
    return {
        "root": root,
        "retrieval": ckpt,
        "ranker": root / "ranker" / "checkpoints" / "last.ckpt",
        "metrics": metrics,
    }


def export_bundle(
    trained: dict, bundle_dir: Path, index: str = "flat", overrides: tuple[str, ...] = ()
) -> Path:
    from recsys.export import export

    cfg = compose_config(
        "export",
        [
            f"paths.root_dir={bundle_dir.parent}",
            f"retrieval_ckpt={trained['retrieval']}",
            f"ranker_ckpt={trained['ranker']}",
            f"index={index}",
            f"bundle_dir={bundle_dir}",
            *overrides,
        ],
    )
    export(cfg)
    return bundle_dir


@pytest.fixture(scope="session")
def tiny_bundle(trained, tmp_path_factory) -> Path:
    return export_bundle(trained, tmp_path_factory.mktemp("served") / "bundle")
