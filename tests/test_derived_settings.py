"""The recipe's data-derived values: each rule against a hand computation, and end to end."""

from __future__ import annotations

import dataclasses

import pytest

from recsys.data.derived_settings import DatasetStats, DerivationRules, dataset_stats
from tests.conftest import compose_config


def recipe_rules(**changes) -> DerivationRules:
    """The recipe's rules (configs/experiment/two_tower.yaml), with ``changes``."""
    rules = DerivationRules.from_config(compose_config("train", ["experiment=two_tower"]).derive)
    return dataclasses.replace(rules, **changes)


def stats(n_users=22_363, n_items=12_068, n_train=131_413, length=23) -> DatasetStats:
    return DatasetStats(n_users, n_items, n_train, length)


def test_rules_by_hand():
    rules = recipe_rules()
    # Beauty-like: 12K items -> exact; length 23 -> 30; 22,363 / 150 = 149 -> 128; 4,000 / 175 steps -> 23
    assert rules.apply(stats()) == {
        "data.max_history": 30,
        "data.batch_size": 128,
        "model.softmax": "exact",
        "model.num_global_negatives": 4096,
        "model.logq": "none",
        "trainer.max_epochs": 23,
        "callbacks.ema.decay": 0.998095,  # 1 − 1 / (3 epochs × ⌈22,363 / 128⌉ = 175 steps)
        "model.lr_patience": 2,  # ⌈300 / 175⌉
        "callbacks.early_stopping.patience": 5,  # ⌈750 / 175⌉
    }
    # the reference scale: 434K items -> 4,096 sampled negatives with logQ; long histories capped;
    # 102,000 / 150 -> 512, capped at 128 -> 797 steps an epoch -> 4,000 steps in 6 epochs; the softmax work
    # (3.8M targets × 4,096 columns an epoch) allows 4: the lower bound, 10
    big = rules.apply(stats(n_users=102_000, n_items=434_206, n_train=3_800_000, length=480))
    assert big["model.softmax"] == "sampled" and big["model.num_global_negatives"] == 4096
    assert big["model.logq"] == "both"
    assert (
        big["data.max_history"] == 200 and big["data.batch_size"] == 128 and big["trainer.max_epochs"] == 10
    )
    # ML-100K-like: few users -> the smallest batch, many epochs (943 / 32 -> 30 steps; 4,000 / 30 -> 134)
    small = rules.apply(stats(n_users=943, n_items=1_682, n_train=97_000, length=500))
    assert small["data.batch_size"] == 32 and small["trainer.max_epochs"] == 134


def test_softmax_work_caps_the_epochs_of_a_large_file():
    # Sports-like: 35,598 / 150 -> 256, capped at 128 -> 279 steps, 4,000 / 279 -> 15 epochs, within
    # 6.5e10 / (221,045 × 18,346) = 16.0 epochs of softmax work
    sports = recipe_rules().apply(stats(n_users=35_598, n_items=18_346, n_train=221_045))
    assert sports["data.batch_size"] == 128 and sports["trainer.max_epochs"] == 15
    # Yelp-like: 30,431 users -> 238 steps, 4,000 / 238 -> 17 epochs; the softmax work allows
    # 6.5e10 / (251,396 × 20,032) = 12.9 -> 12
    yelp = recipe_rules().apply(stats(n_users=30_431, n_items=20_032, n_train=251_396))
    assert yelp["trainer.max_epochs"] == 12
    # a smaller work budget binds the larger file first
    assert (
        recipe_rules(softmax_work=3.7e10).apply(stats(n_users=35_598, n_items=18_346, n_train=221_045))[
            "trainer.max_epochs"
        ]
        == 10
    )


def test_windows_and_ema_from_the_users_lengths():
    # lengths 1 (no window), 2, 51, 101 at max_history 50: 0 + 1 + 1 + 2 windows
    four = DatasetStats(4, 100, 150, 101, lengths=(1, 2, 51, 101))
    assert four.windows(50) == 4 and four.windows(100) == 3
    # ML-100K-like: 943 users of 300 items at max_history 200 -> 2 windows each, 1,886 / 32 -> 59 steps
    ml = DatasetStats(943, 1682, 97_000, 300, lengths=(300,) * 943)
    derived = recipe_rules().apply(ml)
    assert derived["data.max_history"] == 200 and derived["data.batch_size"] == 32
    assert derived["callbacks.ema.decay"] == round(1 - 1 / (3 * 59), 6)
    assert derived["model.lr_patience"] == 6 and derived["callbacks.early_stopping.patience"] == 13


@pytest.mark.parametrize(("length", "window"), [(3, 20), (20, 20), (21, 30), (199, 200), (5000, 200)])
def test_max_history_rounds_up_to_tens_within_range(length, window):
    assert recipe_rules().apply(stats(length=length))["data.max_history"] == window


def test_stats_of_a_prepared_dataset(tmp_path):
    from tests.test_sequence_source import _prepare

    dataset = _prepare(tmp_path)
    # training sequences (all but val and test targets): lengths 2, 1, 3, 2, 4 -> 95% quantile 3.8 -> 4
    assert dataset_stats(dataset, 0.95) == DatasetStats(5, 5, 7, 4)
    assert dataset_stats(dataset, 0.5).sequence_length_quantile == 2


@pytest.mark.slow
def test_train_derives_unless_given_on_the_command_line(tmp_path):
    """End to end through the CLI: the derived values and their statistics land in metrics.json,
    and a value given on the command line is kept."""
    import json

    from tests.conftest import run_train_cli
    from tests.test_sequence_source import PER_USER

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "seq.txt").write_text(PER_USER * 1)
    args = [
        "experiment=two_tower",
        "data=sequences",
        f"data.raw_dir={tmp_path / 'raw'}",
        "data.preparer.source.file=seq.txt",
        "data.batch_size=2",
        "model.dim=8",
        "trainer.max_epochs=1",
        "~callbacks.rich_progress_bar",
        "trainer.enable_progress_bar=false",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path}/out",
    ]
    run_train_cli(args, timeout=600)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["derived/stats/n_items"] == 5 and metrics["derived/stats/n_train_targets"] == 7
    assert metrics["derived/data.max_history"] == 20 and metrics["derived/model.softmax"] == "exact"
    assert "derived/data.batch_size" not in metrics and "derived/trainer.max_epochs" not in metrics
    assert metrics["epochs_done"] == 1 and metrics["text_used"] is False and metrics["exclude_seen"] is True
    # the prepared data keeps the configured cap (evaluate and export compose the same data config);
    # it sits in the recipe's validation-sample directory (with 5 users the sample is every user)
    prepared = tmp_path / "data" / "processed" / "sequences_val4096"
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["config"]["max_history"] == 100


def test_recipe_composes_its_rules():
    rules = recipe_rules()
    assert rules.exact_softmax_max_items == 100_000 and rules.max_history_range == (20, 200)
    assert rules.batch_size_range == (32, 128)


def test_a_given_batch_or_window_is_what_the_step_rules_count_with():
    # Sports-like at a batch of 128 set by the user: 35,598 / 128 -> 279 steps an epoch, so the EMA
    # spans 3 × 279 steps and the patiences are ⌈300 / 279⌉ and ⌈750 / 279⌉ epochs (not 256's 140)
    sports = stats(n_users=35_598, n_items=18_284, n_train=189_543)
    given = recipe_rules().apply(sports, {"data.batch_size": 128})
    assert given["data.batch_size"] == 128
    assert given["callbacks.ema.decay"] == round(1 - 1 / (3 * 279), 6)
    assert given["model.lr_patience"] == 2 and given["callbacks.early_stopping.patience"] == 3
    # a given window changes the number of windows a user makes: 2 users of 101 at 50 -> 2 × ⌈100 / 50⌉
    two = DatasetStats(2, 100, 200, 101, lengths=(101, 101))
    assert (
        recipe_rules(batch_size_range=(1, 256)).apply(two, {"data.max_history": 50})["data.max_history"] == 50
    )
    assert recipe_rules().apply(two, {"data.max_history": 50, "data.batch_size": 2})[
        "callbacks.ema.decay"
    ] == (
        round(1 - 1 / (3 * 2), 6)  # 4 windows / 2 = 2 steps an epoch
    )


def test_long_histories_get_the_recurrent_variant():
    """A median training sequence of at least ``long_history_length`` items (MovieLens) switches to
    the recipe's ``long_history`` settings (a GRU over item-MLP vectors); short ones (the Amazon and
    Yelp files) keep SASRec; a user's own choice on the command line is kept."""
    rules = recipe_rules()
    assert rules.long_history_length == 50
    short = DatasetStats(100, 500, 700, 20, lengths=(8,) * 100)
    assert "model.user_encoder" not in rules.apply(short) and "model.item_mlp" not in rules.apply(short)
    long = DatasetStats(100, 500, 7_000, 90, lengths=(49,) * 49 + (50,) * 51)  # median 50
    derived = rules.apply(long)
    assert derived["model.user_encoder"]["_target_"] == "recsys.models.user_tower.gru"
    assert derived["model.item_mlp"] is True
    assert "model.user_encoder" not in rules.apply(DatasetStats(100, 500, 7_000, 90, lengths=(49,) * 100))


def test_long_history_rule_in_a_composed_config(tmp_path):
    """Through ``derive_settings``: the encoder node replaces the recipe's SASRec (reported by its
    target), unless the command line chose one."""
    from omegaconf import OmegaConf

    from recsys.data.derived_settings import derive_settings

    cfg = compose_config("train", ["experiment=two_tower", "data=movielens_100k"])

    class Dataset:  # the statistics a 60-item history per user gives
        n_users, n_items = 10, 40

        def interactions(self, columns):
            import pyarrow as pa

            return pa.table({"user_idx": [u for u in range(10) for _ in range(61)], "role": [0] * 610})

        def n_rows(self, split):
            return 600

    overrides, report = derive_settings(Dataset(), cfg.derive)
    assert report["derived/model.user_encoder"] == "recsys.models.user_tower.gru"
    assert report["derived/stats/median_length"] == 61
    OmegaConf.update(cfg, "model.user_encoder", overrides["model.user_encoder"], merge=False)
    assert cfg.model.user_encoder.hidden_dim == cfg.model.dim  # interpolations resolve in the run's config
    kept, _ = derive_settings(Dataset(), cfg.derive, keep={"model.user_encoder"})
    assert "model.user_encoder" not in kept and kept["model.item_mlp"] is True


def test_a_validation_sample_is_prepared_in_its_own_directory():
    def processed_dir(*overrides: str) -> str:
        return compose_config("train", ["experiment=two_tower", "data=beauty", *overrides]).data.processed_dir

    every = processed_dir("split.validation_users=null")
    assert every.endswith("/beauty")
    assert processed_dir() == every + "_val4096"  # the recipe's sample
    assert processed_dir("split.others=history") == every + "_val4096_history"
    assert processed_dir("split.seed=3") == every + "_val4096_s3"
