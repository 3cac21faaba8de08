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


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One text-embedding cache for the whole session, so each text is encoded once."""
    return tmp_path_factory.mktemp("embedding_cache")
