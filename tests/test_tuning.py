"""hydra/sweeper=optuna: search spaces, the pruning callback, resuming a study, the tuned experiment
file, and two processes on one SQLite study (tiny synthetic data)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from recsys.tuning.pruning import OptunaPruning
from recsys.tuning.search_space import as_override, parse_search_space, suggest_all
from recsys.tuning.study import WORKER_ATTR, open_study, tuned_experiment
from tests.conftest import REPO_ROOT, compose_config, run_train_cli

TINY_SPACE = """# @package _global_
defaults:
  - override /hydra/sweeper: optuna
optimized_metric: val/ndcg@10
hydra:
  mode: MULTIRUN
  sweep:
    dir: ${paths.log_dir}/studies/${hydra.sweeper.study_name}
    subdir: trial_${hydra.job.num}
  sweeper:
    search_space:
      model.dim: [16, 32]
      trainer.max_epochs: {type: int, low: 2, high: 4, step: 2}
"""

TINY_SWEEP = [
    "experiment=two_tower",
    "data=synthetic",
    "text_encoder=hashing",
    "data.preparer.source.generator.n_users=300",
    "data.preparer.source.generator.n_items=400",
    "derive=null",
    "data.max_history=20",
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
]


def tiny_space(tmp_path: Path) -> list[str]:
    """A search space of your own: hparams_search/tiny.yaml on Hydra's search path, two values."""
    conf = tmp_path / "conf"
    (conf / "hparams_search").mkdir(parents=True, exist_ok=True)
    (conf / "hparams_search" / "tiny.yaml").write_text(TINY_SPACE)
    return ["hparams_search=tiny", f"hydra.searchpath=[file://{conf}]"]


def sweep(tmp_path: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    args = [
        *tiny_space(tmp_path),
        *TINY_SWEEP,
        f"paths.root_dir={tmp_path}",
        f"hydra.sweeper.tuned_dir={tmp_path / 'conf' / 'experiment' / 'tuned'}",
        *overrides,
    ]
    return run_train_cli(args, timeout, OMP_NUM_THREADS="1")


def load(storage: Path, name: str = "tiny-synthetic") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}")


# ------------------------------------------------------------------ search spaces
def test_search_space_parses_kinds_and_conditions():
    params = parse_search_space(
        {
            "model/user_encoder": ["sasrec", "lstm"],
            "model.user_encoder.num_layers": {
                "type": "int",
                "low": 1,
                "high": 3,
                "when": {"model/user_encoder": "sasrec"},
            },
            "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        }
    )
    assert [p.kind for p in params] == ["categorical", "int", "float"]
    assert params[0].is_group and params[2].log
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        chosen = suggest_all(trial, params, fixed={})
        # the layer count exists exactly when the encoder is sasrec
        assert ("model.user_encoder.num_layers" in chosen) == (chosen["model/user_encoder"] == "sasrec")
        assert 1e-4 <= chosen["model.lr"] <= 1e-2
        seen.add(chosen["model/user_encoder"])
        study.tell(trial, 0.0)
    assert seen == {"sasrec", "lstm"}
    # a fixed override of the sweep satisfies a condition too
    fixed = suggest_all(study.ask(), params[1:], fixed={"model/user_encoder": "lstm"})
    assert "model.user_encoder.num_layers" not in fixed


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.lr": {"type": "float", "low": 1.0}}, "needs 'low' and 'high'"),
        ({"model.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
        ({"model.lr": {"type": "normal"}}, "type must be one of"),
        ({"model.dim": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
        ({"a": {"type": "int", "low": 1, "high": 2, "when": {"b": 1}}, "b": [1, 2]}, "only name an earlier"),
        ({"model.lr": {"type": "float", "low": 1, "high": 2, "scale": 3}}, "unknown keys"),
    ],
)
def test_bad_search_space_is_a_clear_error(space, message):
    with pytest.raises(ValueError, match=message):
        parse_search_space(space)


def test_overrides_are_hydra_grammar():
    assert as_override("model.lr", 0.001) == "model.lr=0.001"
    assert as_override("model.normalize", True) == "model.normalize=true"
    assert as_override("model/user_encoder", "lstm") == "model/user_encoder=lstm"


# ------------------------------------------------------------------ pruning and re-queueing
def test_pruning_callback_prunes_a_trial_below_the_median(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = open_study("s", storage, "maximize")
    good = study.ask()
    good.report(0.5, 0)
    study.tell(good, 0.5)

    def epoch_end(value: float) -> tuple[OptunaPruning, SimpleNamespace]:
        trial = study.ask()
        callback = OptunaPruning(storage, "s", trial._trial_id, "val/ndcg@10", pruner=pruner)
        trainer = SimpleNamespace(
            sanity_checking=False, current_epoch=0, should_stop=False, callback_metrics={"val/ndcg@10": value}
        )
        callback.on_validation_end(trainer, None)
        return callback, trainer

    above, trainer = epoch_end(0.9)  # above the median of epoch 0: runs on
    assert not trainer.should_stop and above.pruned_at is None
    assert load_state(storage, "s", above.trial.number) == TrialState.RUNNING
    below, trainer = epoch_end(0.01)
    assert trainer.should_stop and below.pruned_at == 0
    assert load_state(storage, "s", below.trial.number) == TrialState.PRUNED
    # the sanity check's validation is never reported
    sanity = SimpleNamespace(
        sanity_checking=True, current_epoch=0, should_stop=False, callback_metrics={"val/ndcg@10": 0.0}
    )
    above.on_validation_end(sanity, None)
    assert not sanity.should_stop


def load_state(storage: str, name: str, number: int) -> TrialState:
    return optuna.load_study(study_name=name, storage=storage).trials[number].state


def test_a_dead_workers_trial_is_requeued_with_its_parameters(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study("s", storage, "maximize")
    done = study.ask({"model.dim": optuna.distributions.CategoricalDistribution([16, 32])})
    study.tell(done, 0.1)
    crashed = study.ask({"model.dim": optuna.distributions.CategoricalDistribution([16, 32])})
    crashed.set_user_attr(WORKER_ATTR, "a-host-that-is-not-this-one:1")  # another machine: left alone
    study = open_study("s", storage, "maximize")
    assert study.trials[1].state == TrialState.RUNNING
    dead = study.ask({"model.dim": optuna.distributions.CategoricalDistribution([16, 32])})
    dead.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{2**22 + 12345}")  # no such process here
    study = open_study("s", storage, "maximize")
    trials = study.trials
    assert trials[2].state == TrialState.FAIL
    assert trials[3].state == TrialState.WAITING and trials[3].user_attrs["requeued_from"] == 2
    assert trials[3].system_attrs["fixed_params"] == trials[2].params  # asked next, with these values
    assert trials[0].state == TrialState.COMPLETE  # finished trials are kept


def test_tuned_experiment_states_the_best_trial():
    study = optuna.create_study(direction="maximize", study_name="demo")
    distributions = {
        "model.dim": optuna.distributions.CategoricalDistribution([16, 32]),
        "model/user_encoder": optuna.distributions.CategoricalDistribution(["sasrec", "lstm"]),
    }
    for dim, encoder, value in ((16, "sasrec", 0.1), (32, "lstm", 0.3)):
        params = {"model.dim": dim, "model/user_encoder": encoder}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    text = tuned_experiment(
        study, "val/ndcg@10", "two_tower", {"data": "movielens_100k"}, {"model.lr": 0.002}, "cmd"
    )
    assert text.startswith("# @package _global_\n") and "val/ndcg@10 0.3000" in text
    body = yaml.safe_load(text)
    assert body["defaults"][0] == "/experiment/two_tower" and body["defaults"][-1] == "_self_"
    assert {"override /data": "movielens_100k"} in body["defaults"]
    assert {"override /model/user_encoder": "lstm"} in body["defaults"]
    assert body["model"] == {"dim": 32, "lr": 0.002}
    assert body["derive"]["keep"] == ["model.dim", "model.lr"]


# ------------------------------------------------------------------ the plugin end to end
@pytest.mark.slow
def test_sweep_runs_resumes_and_writes_a_loadable_experiment(tmp_path):
    sweep(tmp_path, "hydra.sweeper.n_trials=3")
    db = tmp_path / "logs" / "studies" / "tiny-synthetic" / "optuna.db"
    study = load(db)
    first = [(t.number, t.state, t.value, t.params) for t in study.trials]
    assert len(first) == 3 and all(state == TrialState.COMPLETE for _, state, _, _ in first)
    assert all(0 <= value <= 1 for _, _, value, _ in first)
    # each trial reported its validation score every epoch (the pruning callback was attached)
    assert all(len(t.intermediate_values) == t.params["trainer.max_epochs"] for t in study.trials)
    # the same command with a larger budget resumes: finished trials kept, one more run
    sweep(tmp_path, "hydra.sweeper.n_trials=4")
    study = load(db)
    assert [(t.number, t.state, t.value, t.params) for t in study.trials[:3]] == first
    assert len(study.trials) == 4 and study.trials[3].state == TrialState.COMPLETE
    assert study.trials[3].user_attrs[WORKER_ATTR] != study.trials[0].user_attrs[WORKER_ATTR]  # a new process
    jobs = tmp_path / "logs" / "studies" / "tiny-synthetic"
    assert sorted(p.name for p in jobs.glob("trial_*")) == ["trial_0", "trial_1", "trial_2", "trial_3"]
    # no test metrics in any trial: tuning reads validation only
    assert not list((tmp_path / "logs" / "studies").rglob("metrics.json"))
    # the tuned experiment composes and carries the best trial's values
    cfg = compose_config(
        "train", ["experiment=tuned/synthetic", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    )
    best = study.best_trial
    assert (
        cfg.model.dim == best.params["model.dim"]
        and cfg.trainer.max_epochs == best.params["trainer.max_epochs"]
    )
    assert (
        cfg.data.name == "synthetic"
        and cfg.data.max_history == 20
        and "hparams_search" not in str(cfg.get("hydra", ""))
    )


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [
        *tiny_space(tmp_path),
        *TINY_SWEEP,
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.tuned_name=null",
    ]
    procs = []
    for worker in range(2):
        root = tmp_path / f"w{worker}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "recsys.train",
                    *common,
                    f"paths.root_dir={root}",
                    f"hydra.sweeper.sampler.seed={worker}",
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-4000:]
    study = optuna.load_study(study_name="tiny-synthetic", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 4
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert len({t.user_attrs[WORKER_ATTR] for t in done}) == 2  # both processes ran trials of the one study
    # each trial's job directory is named by its number, whichever process ran it
    dirs = {p.name for w in (0, 1) for p in (tmp_path / f"w{w}").glob("logs/studies/*/trial_*")}
    assert dirs == {f"trial_{t.number}" for t in study.trials}


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    """A user error in one trial (a bad value) fails that trial only; a space that always fails
    stops after max_failed_trials instead of looping."""
    sweep(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failed_trials=2", "model.logq=bogus")
    study = load(tmp_path / "logs" / "studies" / "tiny-synthetic" / "optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert not (tmp_path / "conf" / "experiment" / "tuned").exists()  # no best trial, no file
