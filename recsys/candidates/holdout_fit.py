"""``holdout_ckpt=auto``: the served retrieval run's holdout twin, fitted once per served checkpoint.

A ranker must learn from lists that relate to their model as the served model's test lists relate
to it (``CandidateDataModule``, ``holdout_ckpt``). The twin is the served run's own configuration
(``config.yaml`` next to its checkpoints, with the values its ``derive`` rules resolved) fitted with
``split.skip_last=2``: before each user's served val and test interactions, so its test targets are
the served model's last training targets. ``holdout_targets`` (m) of them are held out a user
(``split.test_targets=m``: each a list for the ranker, with the history before it), and the twin is
selected on the interaction before them; it is fitted without a test pass (its lists are built by
the ranker's datamodule). It is cached under ``paths.cache_dir/holdout/<sha256 of the served
checkpoint>[_m<m>]``: a second ranker on the same retrieval model reuses it, and the fit's time is
reported (``holdout/fit_s``) in the ranker's metrics.json.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys.utils.artifacts import exclusive_lock, sha256_file, write_json_atomic
from recsys.utils.config_resolvers import split_dir_suffix
from recsys.utils.hydra_helpers import RUN_CONFIG

log = logging.getLogger(__name__)

SKIP_LAST = 2  # the served val and test interactions


def fit_holdout(cfg: DictConfig, train_fn: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Replace ``holdout_ckpt: auto`` by the twin's best checkpoint (``train_fn`` fits it unless the
    cache holds it) and return the report for metrics.json; anything else is left as it is."""
    if cfg.get("holdout_ckpt") != "auto":
        return {}
    served = Path(cfg.retrieval_ckpt)
    targets = int(cfg.get("holdout_targets", 1))  # 0 is refused by holdout_record, never read as 1
    try:
        record = holdout_record(served, Path(cfg.paths.cache_dir) / "holdout", train_fn, targets)
    except NoTwin as why:
        # a split cut by time across users (global_temporal) has no "last interactions a user" to
        # hold out; its val targets already lie after everything the served model trained on
        log.warning("holdout_ckpt=auto: %s; the served model's val lists train the ranker", why)
        cfg.holdout_ckpt = None
        return {"holdout/checkpoint": f"none ({why})"}
    cfg.holdout_ckpt = record["checkpoint"]
    log.info("holdout model %s (fitted in %.0f s)", record["checkpoint"], record["fit_s"])
    return {
        "holdout/checkpoint": record["checkpoint"],
        "holdout/fit_s": record["fit_s"],
        "holdout/targets": targets,
    }


class NoTwin(ValueError):
    """The served run's split has no twin (it cannot skip each user's last interactions)."""


def holdout_record(
    served: Path, cache: Path, train_fn: Callable[[DictConfig], dict[str, Any]], targets: int = 1
) -> dict[str, Any]:
    """{checkpoint, fit_s, served} of ``served``'s twin holding out ``targets`` lists a user, fitted
    now or read from the cache."""
    if targets < 1:
        raise ValueError(f"holdout_targets must be >= 1, got {targets}")
    config = served.parent.parent / RUN_CONFIG
    if not served.is_file():
        raise FileNotFoundError(f"retrieval_ckpt={served}: no such checkpoint")
    if not config.is_file():
        raise FileNotFoundError(
            f"holdout_ckpt=auto: {config} not found (the run that wrote {served.name} saved no "
            f"configuration); train the retrieval run again with split.skip_last={SKIP_LAST} and pass "
            "holdout_ckpt=<its best checkpoint>, or train on the served model's val lists with "
            "holdout_ckpt=null"
        )
    out = cache / (sha256_file(served)[:16] + (f"_m{targets}" if targets != 1 else ""))
    path = out / "holdout.json"
    with exclusive_lock(out.with_name(out.name + ".lock")):  # two rankers on one model fit it once
        if not path.is_file() or not Path(json.loads(path.read_text())["checkpoint"]).is_file():
            run = OmegaConf.load(config)
            if "skip_last" not in run.split:
                kind = str(run.split.get("_target_", "?")).rsplit(".", 1)[-1]
                raise NoTwin(f"the split of {config} ({kind}) holds out no last interactions")
            split = run.split
            split.skip_last, split.test_targets = SKIP_LAST, targets
            # its directory from these values: the interpolation in a config saved before
            # split.test_targets existed does not name it
            split.dir_suffix = split_dir_suffix(
                split.validation_users, split.others, split.seed, SKIP_LAST, targets
            )
            run.test = False  # its test rows are the ranker's lists, built by the ranker's datamodule
            # in this process: a distributed launch here would start the ranker's own command again
            run.trainer.devices, run.trainer.num_nodes, run.trainer.strategy = 1, 1, "auto"
            run.paths.output_dir = str(out)
            run.derive = None  # the served run's derived values, as they were resolved
            run.ckpt_path = None
            started = time.perf_counter()
            metrics = train_fn(run)
            if not metrics.get("best_checkpoint"):
                raise RuntimeError(f"the holdout fit in {out} saved no checkpoint")
            write_json_atomic(
                path,
                {
                    "checkpoint": str(Path(metrics["best_checkpoint"]).resolve()),
                    "fit_s": round(time.perf_counter() - started, 1),
                    "served": str(served.resolve()),
                },
            )
    return json.loads(path.read_text())
