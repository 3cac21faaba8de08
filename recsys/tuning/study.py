"""An Optuna study that survives a crash and can be shared: open or resume it, re-queue the trials
a dead worker left running, count and show what is finished, write the best trial as an experiment."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from recsys.utils.artifacts import exclusive_lock

log = logging.getLogger(__name__)

WORKER_ATTR = "worker"  # host:pid of the sweeper that asked the trial
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(worker: str | None) -> bool:
    """Whether ``worker`` (host:pid) is a live process on this host; a worker elsewhere counts as
    alive (another machine's trials are left to it)."""
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def storage_for(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage; SQLite waits for a lock instead of failing when several workers write."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not url.startswith("sqlite:///"):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    database = Path(url.removeprefix("sqlite:///"))
    # the first workers on a new file would each create its schema: Optuna's version row then
    # fails the second insert (UNIQUE alembic_version); they take turns instead
    with exclusive_lock(database.with_name(database.name + ".lock")):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(
    name: str,
    storage: str,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study or load it, and re-queue (with the same parameters) every trial a dead
    worker on this host left running; those are marked failed and do not count as finished."""
    study = optuna.create_study(
        study_name=name,
        storage=storage_for(storage),
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive_here(trial.user_attrs.get(WORKER_ATTR)):
            continue
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("trial %d was left running by a dead worker: re-queued with its parameters", trial.number)
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def trial_state(study: optuna.Study, number: int) -> TrialState:
    return study.get_trials(deepcopy=False)[number].state


def results_table(study: optuna.Study, metric: str):
    """A rich table of every trial: state, value, epochs reported, parameters."""
    from rich.table import Table

    trials = study.get_trials(deepcopy=False)
    done = finished(study)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    table = Table(title=f"study {study.study_name}: {len(done)} finished ({pruned} pruned), {metric}")
    for column in ("#", "state", metric, "epochs"):
        table.add_column(column, justify="right")
    table.add_column("parameters")
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    for t in trials:
        value = t.value
        if value is None and t.intermediate_values:
            value = max(t.intermediate_values.values())
        table.add_row(
            f"{t.number}{' *' if t.number == best else ''}",
            t.state.name.lower(),
            "" if value is None else f"{value:.4f}",
            str(len(t.intermediate_values)),
            " ".join(f"{k}={_short(v)}" for k, v in t.params.items()),
        )
    return table


def _short(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tuned_experiment(
    study: optuna.Study,
    metric: str,
    base_experiment: str | None,
    groups: Mapping[str, str],
    values: Mapping[str, Any],
    command: str,
) -> str:
    """The best trial as an experiment file (``# @package _global_``): the base experiment, the
    sweep's fixed overrides and the best parameters; tuned and fixed values stay as written when
    the recipe derives values from the data (``derive.keep``)."""
    best = study.best_trial
    chosen_groups = {**groups, **{k: v for k, v in best.params.items() if "/" in k}}
    chosen_values = {**values, **{k: v for k, v in best.params.items() if "/" not in k}}
    trials = study.get_trials(deepcopy=False)
    n_pruned = sum(t.state == TrialState.PRUNED for t in trials)
    header = [
        "# @package _global_",
        f"# The best trial of Optuna study {study.study_name!r}: trial {best.number}, {metric} "
        f"{best.value:.4f} (validation),",
        f"# {len(finished(study))} trials finished ({n_pruned} pruned). Written by the sweep",
        f"#   {command}",
        "# Reproduce: python -m recsys.train experiment=tuned/<this file's name>",
    ]
    defaults: list[Any] = []
    if base_experiment:
        defaults.append(f"/experiment/{base_experiment}")
    defaults += [{f"override /{k.lstrip('/')}": v} for k, v in sorted(chosen_groups.items())]
    defaults.append("_self_")
    body: dict[str, Any] = {"defaults": defaults}
    for key, value in sorted(chosen_values.items()):
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    body.setdefault("derive", {})
    if isinstance(body["derive"], dict):
        body["derive"]["keep"] = sorted(chosen_values)  # the recipe's derived values never replace these
    return "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def best_is_finite(study: optuna.Study) -> bool:
    try:
        return study.best_trial.value is not None and math.isfinite(study.best_trial.value)
    except ValueError:  # no completed trial
        return False


def parse_overrides(arguments: Sequence[str], group_names: set[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(group choices, values) of the sweep's fixed ``key=value`` arguments."""
    groups, values = {}, {}
    for argument in arguments:
        if "=" not in argument or argument.startswith("~"):
            continue
        key, value = argument.split("=", 1)
        key = key.lstrip("+")
        if key in group_names or "/" in key:
            groups[key] = value
        else:
            values[key] = yaml.safe_load(value) if value else value
    return groups, values
