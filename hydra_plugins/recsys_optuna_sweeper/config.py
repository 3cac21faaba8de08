"""The sweeper's config schema, registered as ``hydra/sweeper=optuna``."""

# no `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.recsys_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler and pruner itself (trials rebuild the pruner)
    # the study: one per search space and dataset unless named; its SQLite file lives in the
    # sweep directory, which stays the same for the same command, so running it again resumes
    study_name: str = "${hydra.runtime.choices.hparams_search}-${data.name}"
    storage: str | None = None  # null: sqlite:///<hydra.sweep.dir>/optuna.db; any RDB URL to share
    direction: str = "maximize"
    n_trials: int = 20  # finished trials (complete or pruned) the study should hold
    n_jobs: int = 1  # trials launched at once (the launcher runs them: joblib in parallel)
    max_failed_trials: int = 5  # this sweep stops after this many failed trials (a broken space never loops)
    metric: str = "${optimized_metric}"
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": "${seed}"}
    )
    pruner: Any = field(
        default_factory=lambda: {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 4,
            "n_warmup_steps": 3,
        }
    )
    search_space: dict[str, Any] = field(default_factory=dict)
    # the best trial is written to configs/experiment/tuned/<tuned_name>.yaml (null: not written)
    tuned_name: str | None = "${data.name}"
    tuned_dir: str | None = None  # null: the repository's configs/experiment/tuned


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="recsys")
