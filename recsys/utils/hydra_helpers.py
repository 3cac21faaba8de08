"""Small helpers shared by the Hydra entry points."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger(__name__)
CONFIG_PATH = str(Path(__file__).resolve().parents[2] / "configs")
RUN_CONFIG = "config.yaml"  # a training run's configuration, next to its checkpoints/


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def save_run_config(cfg: DictConfig, paths: DictConfig) -> None:
    """``cfg`` (the run's configuration, taken before anything resolved its interpolations) as
    ``config.yaml`` in the run's output directory, with the ``paths`` this run resolved and every
    other interpolation kept: a replay with another split (a holdout twin,
    ``recsys.candidates.holdout_fit``) then prepares its own data directory."""
    from omegaconf import OmegaConf

    from recsys.utils.artifacts import write_text_atomic

    node = OmegaConf.to_container(cfg, resolve=False)
    node["paths"] = OmegaConf.to_container(paths, resolve=True)
    write_text_atomic(Path(node["paths"]["output_dir"]) / RUN_CONFIG, OmegaConf.to_yaml(node))


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


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The number a sweeper maximizes: a metrics.json key, or the best validation score when
    ``optimized_metric`` names the checkpoint monitor (test metrics must not drive selection)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name in metrics:
        return float(metrics[name])
    if name == cfg.model.get("monitor"):
        if metrics.get("val_best") is None:  # validation was off (trainer.limit_val_batches=0)
            log.warning("no validation score for optimized_metric %s: nothing to optimize", name)
            return None
        return float(metrics["val_best"])
    raise KeyError(f"optimized_metric {name!r} is not among this run's metrics")


def command_line_keys() -> set[str]:
    """Config keys set by this run's command-line overrides (``key=value``, ``+key=``, ``++key=``);
    empty outside a Hydra run. Derived values leave these alone."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.add(key.replace("/", "."))  # a group choice (model/user_encoder=gru) sets its node
    return keys


def _user_error(error: BaseException) -> BaseException | None:
    """The user's mistake behind ``error`` (bad data, a bad config value, a missing file), following
    the causes Hydra's instantiate wraps around it; None for anything else (a bug keeps its trace)."""
    from hydra.errors import InstantiationException

    from recsys.utils.artifacts import ManifestError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FileNotFoundError | ValueError | ManifestError | InstantiationException):
            return seen.__cause__ if isinstance(seen, InstantiationException) and seen.__cause__ else seen
        seen = seen.__cause__
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(task):
    """Entry points: a user error prints one line and exits 2 (``HYDRA_FULL_ERROR=1``: the traceback)."""
    import functools
    import sys

    @functools.wraps(task)
    def run(cfg):
        try:
            return task(cfg)
        except Exception as error:
            cause = _user_error(error)
            if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise  # a sweep's job fails alone: the sweeper records it and goes on
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return run
