"""Hydra calls ``setup`` then ``sweep``; trials are asked from the study, launched in batches of
``n_jobs`` through Hydra's launcher, and told their job's return value (``optimized_metric``)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.recsys_optuna_sweeper.config import OptunaSweeperConf  # noqa: F401  (registers it)

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = conf
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import hydra
        from optuna.trial import TrialState
        from rich.console import Console

        from recsys.tuning.search_space import as_override, parse_search_space, suggest_all
        from recsys.tuning.study import (
            WORKER_ATTR,
            best_is_finite,
            finished,
            open_study,
            parse_overrides,
            results_table,
            trial_state,
            tuned_experiment,
            worker_id,
        )

        assert self.config is not None and self.launcher is not None
        conf = self.conf
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = conf.get("storage") or f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
        params = parse_search_space(OmegaConf.to_container(conf.get("search_space") or {}, resolve=True))
        if not params:
            raise ValueError(
                "hydra.sweeper.search_space is empty: nothing to search (see configs/hparams_search)"
            )
        pruner_conf = OmegaConf.to_container(conf["pruner"], resolve=True) if conf.get("pruner") else None
        pruner = hydra.utils.instantiate(pruner_conf) if pruner_conf else None
        study = open_study(conf["study_name"], storage, conf["direction"], None, pruner)
        study.sampler = self._sampler(len(study.trials))
        self.job_idx = len(study.trials)  # Hydra's job numbers continue too
        metric = conf["metric"]
        group_names = set(OmegaConf.to_container(self.config.hydra.runtime.choices).keys())
        groups, values = parse_overrides(arguments, group_names)
        fixed = {**groups, **values}
        pruning = [
            f"+optuna_trial.{k}={v}"
            for k, v in (("storage", storage), ("study", study.study_name), ("monitor", metric))
        ]
        pruning += _flatten("+optuna_trial.pruner", pruner_conf) if pruner_conf else []
        log.info(
            "study %s (%s): %d of %d trials finished",
            study.study_name,
            storage,
            len(finished(study)),
            conf["n_trials"],
        )
        returns, failed = [], 0
        while (left := int(conf["n_trials"]) - len(finished(study))) > 0:
            if failed >= int(conf.get("max_failed_trials", 5)):
                log.error(
                    "%d trials failed in this sweep: stopping (see their logs in %s)", failed, sweep_dir
                )
                break
            trials, batch = [], []
            for _ in range(min(int(conf["n_jobs"]), left)):
                trial = study.ask()
                trial.set_user_attr(WORKER_ATTR, worker_id())
                chosen = suggest_all(trial, params, fixed)
                trials.append(trial)
                batch.append(
                    [
                        *arguments,
                        *(as_override(k, v) for k, v in chosen.items()),
                        "test=false",  # tuning reads validation only: test is read once, in the benchmark
                        *pruning,
                        # Optuna hands a running trial to another process by its id
                        f"+optuna_trial.trial_id={trial._trial_id}",
                        # one directory per trial, named by its number: workers sharing the
                        # study (and a resumed sweep) never write into each other's
                        f"hydra.sweep.subdir=trial_{trial.number}",
                    ]
                )
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            for trial, result in zip(trials, results, strict=True):
                if trial_state(study, trial.number) != TrialState.RUNNING:
                    continue  # pruned from inside the run
                value = result.return_value if result.status == JobStatus.COMPLETED else None
                if value is None:
                    log.warning("trial %d failed or returned no %s", trial.number, metric)
                    study.tell(trial, state=TrialState.FAIL)
                    failed += 1
                else:
                    study.tell(trial, float(value))
            returns.append(results)
        Console().print(results_table(study, metric))
        if best_is_finite(study):
            self._write_results(study, metric, groups, values, sweep_dir, tuned_experiment)
        return returns

    def _sampler(self, trials_so_far: int) -> Any:
        """The configured sampler; its seed moves on by the trials the study already holds, so a
        resumed (or second) sweep does not propose the first run's trials again."""
        import hydra

        node = self.conf.get("sampler")
        if not node:
            return None
        node = OmegaConf.to_container(node, resolve=True)
        if node.get("seed") is not None:
            node["seed"] = int(node["seed"]) + trials_so_far
        return hydra.utils.instantiate(node)

    def _write_results(self, study, metric, groups, values, sweep_dir, tuned_experiment) -> None:
        from recsys.utils.artifacts import write_text_atomic
        from recsys.utils.hydra_helpers import CONFIG_PATH

        best = study.best_trial
        OmegaConf.save(
            OmegaConf.create(
                {
                    "study": study.study_name,
                    "best_trial": best.number,
                    "best_value": best.value,
                    "best_params": best.params,
                }
            ),
            sweep_dir / "optimization_results.yaml",
        )
        name = self.conf.get("tuned_name")
        if not name:
            return
        choices = self.config.hydra.runtime.choices
        base = choices.get("experiment")
        # what the file reproduces: the data, the model and trainer settings; not the sweep itself
        # (hparams_search would make it a multirun) nor this machine's paths
        groups = {k: v for k, v in groups.items() if k not in ("experiment", "hparams_search")}
        values = {k: v for k, v in values.items() if not k.startswith(("hydra.", "paths."))}
        if "data" not in groups and choices.get("data"):
            groups["data"] = choices.get("data")
        command = "python -m recsys.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        text = tuned_experiment(study, metric, base, groups, values, command)
        folder = Path(self.conf.get("tuned_dir") or Path(CONFIG_PATH) / "experiment" / "tuned")
        path = folder / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        log.info("best trial %d (%s %.4f) written to %s", best.number, metric, best.value, path)


def _flatten(prefix: str, node: Any) -> list[str]:
    if isinstance(node, dict):
        return [o for k, v in node.items() for o in _flatten(f"{prefix}.{k}", v)]
    return [f"{prefix}={node}"]
