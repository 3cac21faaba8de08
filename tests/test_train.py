"""Training end to end on tiny synthetic data: metrics.json, checkpoints, resume, sweeps, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from recsys.train import train
from tests.conftest import REPO_ROOT, compose_config

TINY = [
    "data=synthetic",
    "text_encoder=hashing",
    "data.preparer.source.generator.n_users=300",
    "data.preparer.source.generator.n_items=400",
    "data.batch_size=64",
    "data.max_history=20",
    "model.dim=32",
    "model.num_global_negatives=64",
    "trainer=fast_dev",
    "~callbacks.rich_progress_bar",
]


def run(tmp_path, *overrides: str) -> dict:
    cfg = compose_config(
        # derive=null: the tiny sizes of TINY, not the ones the recipe would derive from the data
        "train",
        [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out", *TINY, *overrides, "derive=null"],
    )
    return train(cfg)


def test_train_writes_metrics_json_with_all_keys(tmp_path):
    metrics = run(tmp_path, "experiment=two_tower")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["n_users"] > 0 and saved["n_items"] == 400
    ks = [10, 20, 50, 100, 500, 1000, 1500, 2000]
    for stage in ("retrieval", "popularity"):
        assert 0.0 <= saved[f"{stage}/mrr"] <= 1.0
        for k in ks:
            for m in ("recall", "ndcg", "coverage", "diversity", "novelty"):
                assert f"{stage}/{m}@{k}" in saved, f"{stage}/{m}@{k}"
        assert saved[f"{stage}/recall@2000"] == 1.0  # k beyond the catalog retrieves everything
    for seg in ("retrieval_cold", "retrieval_warm"):
        assert f"{seg}/recall@10" in saved and f"{seg}/ndcg@10" in saved
    n_seg = saved["retrieval_cold/n_users"] + saved["retrieval_warm/n_users"]
    assert n_seg == saved["retrieval/n_users"] == saved["n_users"]
    # synthetic fresh releases are cold test targets: the cold-first random baseline stands beside them
    assert saved["retrieval_cold/n_users"] > 0
    n_cold = saved["cold_first_random/n_cold_items"]
    assert 0 < n_cold < saved["n_items"]
    for k in ks:
        assert saved[f"cold_first_random/recall@{k}"] == min(1.0, k / n_cold)
    assert metrics == saved


def test_checkpoint_is_weights_only_and_resume_continues(tmp_path):
    run(tmp_path)
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)  # plain hyperparameters, no pickled objects
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["user_encoder"]["_target_"].endswith("lstm")
    run(tmp_path / "resumed", f"ckpt_path={last}", "trainer.max_epochs=2")
    resumed = torch.load(tmp_path / "resumed" / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 1


def test_sparse_embeddings_train_resume_and_leave_untouched_rows(tmp_path):
    run(tmp_path, "model.sparse_embeddings=true", "trainer.precision=bf16-mixed")
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert set(ckpt["optimizer_states"][0]) == {"dense", "sparse"}
    # SparseAdam keeps moments only for rows that ever had a gradient: most stay at zero
    moments = ckpt["optimizer_states"][0]["sparse"]["state"][0]["exp_avg"]
    touched = (moments != 0).any(dim=1)
    assert 0 < int(touched.sum()) < len(touched)
    run(tmp_path / "resumed", "model.sparse_embeddings=true", f"ckpt_path={last}", "trainer.max_epochs=2")
    resumed = torch.load(tmp_path / "resumed" / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6


@pytest.mark.parametrize("encoder", ["gru", "sasrec"])
def test_other_user_encoders_train(tmp_path, encoder):
    metrics = run(
        tmp_path, f"model/user_encoder={encoder}", "model.logq=both", "model.negative_sampling=popularity"
    )
    assert 0.0 <= metrics["retrieval/ndcg@10"] <= 1.0


FIT_REPORT = ("precision", "epochs_done", "steps_done", "stopped_by_time", "fit_s")


@pytest.mark.parametrize("objective", ["all_positions", "last_position"])
@pytest.mark.parametrize("encoder", ["lstm", "gru", "sasrec"])
def test_each_encoder_trains_under_each_objective(tmp_path, encoder, objective):
    metrics = run(
        tmp_path,
        f"model/user_encoder={encoder}",
        f"model.objective={objective}",
        "trainer.limit_test_batches=1.0",
    )
    assert metrics["steps_done"] == 3 and metrics["epochs_done"] == 1 and metrics["stopped_by_time"] is False
    assert metrics["precision"] == "32-true"
    assert 0.0 <= metrics["retrieval/ndcg@10"] <= 1.0 and metrics["retrieval/n_users"] == metrics["n_users"]
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["objective"] == objective


def test_objectives_feed_different_training_batches(tmp_path):
    """all_positions trains on windows (every target once per epoch), last_position on prefix rows."""
    import hydra

    cfgs = {
        o: compose_config("train", [f"paths.root_dir={tmp_path}", *TINY, f"model.objective={o}"])
        for o in ("all_positions", "last_position")
    }
    loaded = {}
    for objective, cfg in cfgs.items():
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        loaded[objective] = datamodule.splits["train"]
    rows, windows = loaded["last_position"], loaded["all_positions"]
    assert "targets" in windows[[0]] and "target" in rows[[0]]
    assert windows.n_targets == len(rows) and len(windows) < len(rows)


def test_a_run_cut_short_by_max_time_says_so(tmp_path):
    with pytest.warns(UserWarning, match="stopped by trainer.max_time"):
        metrics = run(tmp_path, "trainer.max_time=00:00:00:00", "trainer.max_epochs=5")
    assert metrics["stopped_by_time"] is True and metrics["epochs_done"] < 5
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["stopped_by_time"] is True and saved["steps_done"] == metrics["steps_done"]


def test_same_seed_same_metrics(tmp_path):
    a = run(tmp_path / "a")
    b = run(tmp_path / "b")
    keys = [k for k in a if k.startswith(("retrieval", "popularity"))]
    exact = [k for k in keys if "/diversity@" not in k]
    assert {k: a[k] for k in exact} == {k: b[k] for k in exact}  # ranks, hence all ranking metrics
    # diversity sums float embeddings; allow only last-bit noise
    assert {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, rel=1e-12, abs=1e-12)


@pytest.mark.slow
def test_multirun_sweep_two_jobs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.train",
            "-m",
            f"paths.root_dir={tmp_path}",
            *TINY,
            "model.temperature=0.05,0.1",
            "hydra.job_logging.root.level=WARNING",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted((tmp_path / "logs" / "train" / "multiruns").glob("*/*/metrics.json"))
    assert len(results) == 2
    assert all("retrieval/ndcg@10" in json.loads(p.read_text()) for p in results)


def test_optimized_value_is_the_best_validation_score():
    from recsys.utils.hydra_helpers import optimized_value

    cfg = compose_config("train", ["hparams_search=two_tower"])
    assert optimized_value(cfg, {"val_best": 0.3, "retrieval/ndcg@10": 0.9}) == 0.3
    cfg.optimized_metric = "retrieval/ndcg@10"
    assert optimized_value(cfg, {"val_best": 0.3, "retrieval/ndcg@10": 0.9}) == 0.9
    cfg.optimized_metric = "nope"
    with pytest.raises(KeyError, match="nope"):
        optimized_value(cfg, {})


def test_train_without_test_still_returns_the_validation_score(tmp_path):
    from recsys.utils.hydra_helpers import optimized_value

    metrics = run(tmp_path, "test=false")
    assert set(metrics) == {"best_checkpoint", "val_best", *FIT_REPORT} and 0.0 <= metrics["val_best"] <= 1.0
    assert not (tmp_path / "out" / "metrics.json").exists()
    cfg = compose_config("train", ["test=false"])
    assert optimized_value(cfg, metrics) == metrics["val_best"]


def test_hparams_search_config_composes():
    cfg = compose_config("train", ["hparams_search=two_tower", "experiment=two_tower", "data=movielens_100k"])
    assert cfg.optimized_metric == "val/ndcg@10" and cfg.data.name == "movielens_100k"
    assert cfg.model.normalize is False and cfg.model.user_encoder.dropout == 0.35  # the recipe's values


def test_the_ranker_search_validates_and_never_asks_for_embeddings_the_twin_cannot_give():
    import yaml

    cfg = compose_config("train", ["hparams_search=ranker", "experiment=ranker", "retrieval_ckpt=x.ckpt"])
    assert cfg.data.holdout_fraction > 0 and cfg.model.use_embeddings is False and cfg.holdout_ckpt == "auto"
    space = yaml.safe_load((REPO_ROOT / "configs" / "hparams_search" / "ranker.yaml").read_text())
    assert "model.use_embeddings" not in space["hydra"]["sweeper"]["search_space"]


def test_the_ranker_learns_from_a_holdout_twin_on_features_only():
    cfg = compose_config("train", ["experiment=ranker", "retrieval_ckpt=x.ckpt"])
    assert cfg.holdout_ckpt == "auto" and cfg.data.holdout_ckpt == "auto" and cfg.holdout_targets >= 1
    assert cfg.model.use_embeddings is False  # the twin's vectors live in another space
    earlier = compose_config("train", ["experiment=ranker", "retrieval_ckpt=x.ckpt", "holdout_ckpt=null"])
    assert earlier.data.holdout_ckpt is None


def test_evaluate_reproduces_test_metrics_of_best_checkpoint(tmp_path):
    from recsys.evaluate import evaluate

    trained = run(tmp_path)
    cfg = compose_config(
        "evaluate",
        [
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/eval",
            *[o for o in TINY if not o.startswith("~callbacks")],
            f"ckpt_path={trained['best_checkpoint']}",
        ],
    )
    evaluated = evaluate(cfg)
    keys = [k for k in trained if k.startswith(("retrieval", "popularity"))]
    assert {k: evaluated[k] for k in keys} == pytest.approx({k: trained[k] for k in keys})


def test_evaluate_requires_existing_checkpoint(tmp_path):
    from recsys.evaluate import evaluate

    cfg = compose_config(
        "evaluate",
        [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/eval", "ckpt_path=/nonexistent.ckpt"],
    )
    with pytest.raises(FileNotFoundError, match="nonexistent.ckpt: checkpoint not found"):
        evaluate(cfg)


def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run(tmp_path, "logger=wandb")
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*")), "no offline wandb run was written"
    assert (tmp_path / "out" / "csv").is_dir()  # the CSV logger stays on


def test_cosine_schedule_decays_to_zero_over_the_step_budget(tmp_path):
    run(tmp_path, "model.lr_schedule=cosine", "model.lr=0.01", "trainer.max_epochs=2")
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["lr_schedulers"][0]["T_max"] == 6 and ckpt["lr_schedulers"][0]["last_epoch"] == 6
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_ema_weights_are_what_validation_selects_and_test_reports(tmp_path):
    """With the EMA callback, checkpoints hold the averaged weights, and the run's test scores
    them (Lightning's callback alone would restore the raw weights when testing ckpt_path=best)."""
    from recsys.evaluate import evaluate

    ema = ["+callbacks.ema._target_=recsys.utils.weight_averaging.EMAWeights", "+callbacks.ema.decay=0.5"]
    trained = run(tmp_path, *ema, "trainer.max_epochs=2")
    ckpt = torch.load(trained["best_checkpoint"], weights_only=True)
    raw, averaged = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in averaged if averaged[k].is_floating_point())
    cfg = compose_config(
        "evaluate",
        [
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/eval",
            *[o for o in TINY if not o.startswith("~callbacks")],
            f"ckpt_path={trained['best_checkpoint']}",
        ],
    )
    evaluated = evaluate(cfg)  # loads the checkpoint's state_dict: the averaged weights
    keys = [k for k in trained if k.startswith("retrieval")]
    assert {k: evaluated[k] for k in keys} == pytest.approx({k: trained[k] for k in keys})


def test_debug_max_steps_and_accelerator_compose():
    """`debug=default` changes the run; `trainer.max_steps` needs no `+`; the accelerator is auto
    and precision auto resolves per device."""
    from unittest import mock

    from recsys.utils.precision import resolve_trainer_precision

    assert compose_config("train", ["debug=default"]).trainer.limit_train_batches == 3
    assert compose_config("train", []).trainer.limit_train_batches == 1.0  # every batch unless debugging
    assert compose_config("train", ["trainer.max_steps=10"]).trainer.max_steps == 10
    cfg = compose_config("train", [])
    assert cfg.trainer.accelerator == "auto"
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert resolve_trainer_precision("32", cfg.trainer.accelerator) == "32"
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("recsys.utils.precision.native_bf16", side_effect=lambda device: device == "cuda"),
    ):
        assert resolve_trainer_precision("auto", cfg.trainer.accelerator) == "bf16-mixed"
