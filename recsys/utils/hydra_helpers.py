"""Small helpers shared by the Hydra entry points."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_PATH = str(Path(__file__).resolve().parents[2] / "configs")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def print_summary(title: str, values: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(str(key), f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def instantiate_list(cfg: Any) -> list:
    """Instantiate every ``_target_`` node of a name-keyed config group (callbacks, loggers)."""
    import hydra
    from omegaconf import DictConfig

    if not cfg:
        return []
    return [
        hydra.utils.instantiate(node)
        for node in cfg.values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]
