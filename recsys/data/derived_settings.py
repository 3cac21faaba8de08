"""Training settings a recipe derives from the prepared dataset, by rules stated here.

One recipe (``experiment=two_tower``) must fit catalogs from 1.7K to 434K items and 1K to 100K
users. The few values that have to follow the data are computed from the prepared dataset's
statistics, logged, and stored in ``metrics.json`` (``derived/*``); everything else is a fixed
config value. The rules (``DerivationRules``, the ``derive`` block of an experiment):

- **softmax**: the whole catalog (exact softmax at every position, like SASRec's CE) when it has at
  most ``exact_softmax_max_items`` items; above that ``sampled_negatives`` shared uniform samples
  with the logQ correction (an exact softmax over 434K items does not fit a CPU step).
- **max_history** (window and SASRec positions): the ``length_quantile`` quantile of the users'
  training-sequence lengths, rounded up to a multiple of 10, within ``max_history_range``: long
  enough for almost every user, no longer (padding is wasted work).
- **batch_size** (windows a step): the power of two nearest ``windows / steps_per_epoch``, within
  ``batch_size_range``: about the same number of optimizer steps an epoch on every dataset, but
  no more than 128 windows (on the large files 256 learned slower per epoch and no higher).
  A batch or window the user gives is what the step-based rules below count with.
- **callbacks.ema.decay**: ``1 − 1 / (ema_epochs × steps an epoch)``: the weight average spans
  about ``ema_epochs`` epochs whatever the number of steps an epoch (with a fixed decay a small
  dataset's average would lag many epochs behind).
- **model.lr_patience** and **callbacks.early_stopping.patience** (epochs without a better
  validation score before the rate halves / the run stops): ``lr_patience_steps`` and
  ``early_stopping_steps`` steps' worth of epochs. In epochs, a patience means a few dozen steps on
  a small dataset, where validation is also the noisiest: there it halved the rate and stopped
  runs on noise (ML-100K: stopped at epoch 33 of 35-step epochs, still rising).
- **long histories** (the median training sequence has at least ``long_history_length`` items,
  e.g. MovieLens; the Amazon and Yelp files have 5–8): the settings under ``long_history`` apply, a
  GRU user tower over item-MLP vectors. On ML-100K the recipe's SASRec levels off at validation
  ndcg@10 0.12 and a GRU over item-MLP vectors reaches 0.149; on the short sequences SASRec is the
  published state of the art (experiments/log/benchmark.md).
- **max_epochs**: enough epochs for ``optimizer_steps`` steps in all (at one learning rate the
  runs level off after a similar number of steps, whatever an epoch holds: Beauty after ~2,500),
  but no more than ``softmax_work`` (training targets × softmax columns, summed over the run)
  allows, so a large file's run stays within the time of a small one's; within ``epochs_range``
  (early stopping on validation usually ends the run sooner).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recsys.data.dataset import PreparedDataset
from recsys.data.splitting import TRAIN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetStats:
    n_users: int
    n_items: int
    n_train_targets: int  # training targets (interactions after each user's first, before val)
    sequence_length_quantile: int  # the rules' quantile of training-sequence lengths
    lengths: tuple[int, ...] = field(default=(), repr=False, compare=False)  # per user, for windows

    @property
    def median_length(self) -> float:
        """The median training-sequence length (0 when the per-user lengths are not given)."""
        return float(np.median(self.lengths)) if self.lengths else 0.0

    def windows(self, max_history: int) -> int:
        """Training windows (``recsys.data.windows``) at ``max_history``: ⌈(n − 1) / max_history⌉ a user."""
        n = np.asarray(self.lengths, dtype=np.int64)
        return int((-(-(n[n >= 2] - 1) // max_history)).sum()) if len(n) else self.n_users


def dataset_stats(dataset: PreparedDataset, length_quantile: float) -> DatasetStats:
    role = dataset.interactions(["user_idx", "role"])
    users = role["user_idx"].to_numpy()[role["role"].to_numpy() == TRAIN]
    lengths = np.bincount(users, minlength=dataset.n_users)
    lengths = lengths[lengths > 0]
    return DatasetStats(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        n_train_targets=int(dataset.n_rows("train")),
        sequence_length_quantile=int(np.ceil(np.quantile(lengths, length_quantile))) if len(lengths) else 1,
        lengths=tuple(lengths.tolist()),
    )


@dataclass(frozen=True)
class DerivationRules:
    """The rules' parameters: their values live in the recipe's ``derive`` block
    (configs/experiment/two_tower.yaml), none here."""

    exact_softmax_max_items: int
    sampled_negatives: int
    length_quantile: float
    max_history_range: tuple[int, int]
    steps_per_epoch: int
    batch_size_range: tuple[int, int]
    optimizer_steps: int
    softmax_work: float
    epochs_range: tuple[int, int]
    ema_epochs: float
    lr_patience_steps: int
    early_stopping_steps: int
    long_history_length: int
    long_history: dict[str, Any] = field(hash=False)  # dotted key -> value (a whole node: its own key)

    @classmethod
    def from_config(cls, rules: Any) -> DerivationRules:
        """From an experiment's ``derive`` block (lists become tuples, ``long_history`` a flat map of
        dotted keys; ``keep`` is not a rule)."""
        from omegaconf import DictConfig, OmegaConf

        values: dict[str, Any] = {}
        for k, v in dict(rules).items():
            if k == "keep":
                continue
            if k == "long_history":
                node = OmegaConf.to_container(v, resolve=False) if isinstance(v, DictConfig) else v
                values[k] = flatten_settings(node or {})
            else:
                values[k] = v if isinstance(v, int | float | str) else tuple(v)
        return cls(**values)

    def apply(self, stats: DatasetStats, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Dotted config keys -> values. ``given``: ``data.max_history`` / ``data.batch_size`` set
        by the user, which the step-based rules (epochs, EMA, patiences) then count with."""
        given = given or {}
        lo, hi = self.max_history_range
        max_history = int(
            given.get("data.max_history")
            or min(max(10 * math.ceil(stats.sequence_length_quantile / 10), lo), hi)
        )
        exact = stats.n_items <= self.exact_softmax_max_items
        windows = max(stats.windows(max_history), 1)
        lo, hi = self.batch_size_range
        batch = int(
            given.get("data.batch_size")
            or min(max(2 ** round(math.log2(max(windows / self.steps_per_epoch, 1))), lo), hi)
        )
        lo, hi = self.epochs_range
        steps = math.ceil(windows / batch)
        columns = stats.n_items if exact else self.sampled_negatives
        by_work = self.softmax_work / max(stats.n_train_targets * columns, 1)
        epochs = int(min(max(min(math.ceil(self.optimizer_steps / steps), math.floor(by_work)), lo), hi))
        long = stats.median_length >= self.long_history_length
        return {
            **(self.long_history if long else {}),
            "data.max_history": max_history,
            "data.batch_size": batch,
            "model.softmax": "exact" if exact else "sampled",
            "model.num_global_negatives": self.sampled_negatives,
            "model.logq": "none" if exact else "both",
            "trainer.max_epochs": epochs,
            "callbacks.ema.decay": round(1.0 - 1.0 / (self.ema_epochs * steps), 6),
            "model.lr_patience": math.ceil(self.lr_patience_steps / steps),
            "callbacks.early_stopping.patience": math.ceil(self.early_stopping_steps / steps),
        }


def flatten_settings(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"item_mlp": True, "user_encoder": {"_target_": …}}}`` -> ``{"model.item_mlp":
    True, "model.user_encoder": {…}}``: a node with a ``_target_`` is one value (replaced whole)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and "_target_" not in value:
            flat |= flatten_settings(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _reported(value: Any) -> Any:
    """A derived value as metrics.json holds it: a node by its ``_target_``."""
    return value.get("_target_", str(value)) if isinstance(value, dict) else value


def derive_settings(
    dataset: PreparedDataset,
    rules: dict[str, Any],
    keep: set[str] = frozenset(),
    exists: Callable[[str], bool] = lambda key: True,
    value_of: Callable[[str], Any] = lambda key: None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(overrides, report): the derived values and the statistics they came from. Keys in
    ``keep`` (set on the command line) and in the rules' own ``keep`` list (values an experiment
    states, e.g. a tuned one) are not derived: a value the user gives wins; keys for
    which ``exists`` is false (e.g. a callback the run removed) are left out. A kept window or
    batch size (``value_of`` reads it) is what the step-based rules count with."""
    rules = dict(rules)
    keep = set(keep) | set(rules.pop("keep", None) or ())  # e.g. a tuned experiment's own values
    if "model.num_global_negatives" in keep:  # a count of negatives given: the configured softmax stays
        keep.add("model.softmax")
    rules_ = DerivationRules.from_config(rules)
    stats = dataset_stats(dataset, rules_.length_quantile)
    given = {k: value_of(k) for k in ("data.max_history", "data.batch_size") if k in keep}
    overrides = {k: v for k, v in rules_.apply(stats, given).items() if k not in keep and exists(k)}
    log.info("derived from %s: %s", stats, overrides)
    report = {f"derived/stats/{k}": v for k, v in asdict(stats).items() if k != "lengths"}
    report["derived/stats/median_length"] = stats.median_length
    report |= {f"derived/{k}": _reported(v) for k, v in overrides.items()}
    return overrides, report


def derive_into_config(cfg: Any, keep: set[str], mirror: Any = None) -> dict[str, Any]:
    """Write the values ``cfg.derive`` derives from ``cfg.data``'s prepared dataset into ``cfg`` (a
    Hydra config; keys in ``keep``, those given on the command line, stay), and into ``mirror`` (a
    copy of it, e.g. the run's saved configuration), and return the report (``derived/*`` for
    metrics.json). The prepared data keeps its configured history cap, so every entry point
    composing the same data config (evaluate, export) finds it current."""
    from omegaconf import OmegaConf

    dataset = PreparedDataset.load(cfg.data.processed_dir)
    overrides, report = derive_settings(
        dataset,
        cfg.derive,
        keep,
        lambda key: OmegaConf.select(cfg, key) is not None,
        lambda key: OmegaConf.select(cfg, key),
    )
    cap = cfg.data.preparer.max_history  # the prepared data's, before data.max_history is derived
    for target in (cfg, *([mirror] if mirror is not None else [])):
        OmegaConf.update(target, "data.preparer.max_history", cap, merge=False)
        for key, value in overrides.items():
            OmegaConf.update(target, key, value, merge=False)
    return report


def prepared_datamodule(
    cfg: Any, keep: Callable[[], set[str]], mirror: Any = None
) -> tuple[Any, dict[str, Any]]:
    """``cfg.data`` instantiated with its data prepared and, under ``cfg.derive`` rules, the derived
    values written into ``cfg`` (and ``mirror``) and the DataModule built again with them (its
    batch and window); ``keep()`` names the keys set on the command line. (DataModule, report)."""
    import hydra

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    if not cfg.get("derive"):
        return datamodule, {}
    report = derive_into_config(cfg, keep(), mirror)
    return hydra.utils.instantiate(cfg.data), report
