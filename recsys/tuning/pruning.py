"""Trial pruning from inside a training run: a Lightning callback that reports the monitored
validation score of each epoch to the trial and stops a hopeless one."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def trial_handle(study: Any, trial_id: int) -> Any:
    """The running trial ``trial_id`` of ``study`` as an ``optuna.trial.Trial``, in this process
    (the sweeper asked it in another one). Optuna's ask-and-tell interface hands trials across
    processes by id; the constructor is the documented way to rebuild one."""
    import optuna

    return optuna.trial.Trial(study, trial_id)


class OptunaPruning(L.Callback):
    """Report ``monitor`` after every validation epoch; when the study's pruner says so, mark the
    trial pruned in the shared storage and stop training (the sweeper then leaves it as pruned)."""

    def __init__(self, storage: str, study: str, trial_id: int, monitor: str, pruner: Any = None):
        import optuna

        from recsys.tuning.study import storage_for

        if isinstance(pruner, dict) or (pruner is not None and hasattr(pruner, "keys")):
            import hydra

            pruner = hydra.utils.instantiate(pruner)
        self.study = optuna.load_study(study_name=study, storage=storage_for(storage), pruner=pruner)
        self.trial = trial_handle(self.study, int(trial_id))
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            from optuna.trial import TrialState

            self.pruned_at = epoch
            self.study.tell(self.trial.number, state=TrialState.PRUNED)
            trainer.should_stop = True
            log.info(
                "trial %d pruned after epoch %d (%s %.4f)", self.trial.number, epoch, self.monitor, value
            )


def pruning_callbacks(trial: Any) -> list[L.Callback]:
    """The pruning callback of a run the Optuna sweeper launched (``optuna_trial``: storage, study,
    trial_id, monitor, pruner); none otherwise."""
    if not trial:
        return []
    return [
        OptunaPruning(
            **{k: trial[k] for k in ("storage", "study", "trial_id", "monitor")}, pruner=trial.get("pruner")
        )
    ]
