"""holdout_ckpt=auto: the served retrieval run replayed with split.skip_last=2, once per checkpoint."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf

from recsys.candidates.holdout_fit import holdout_record
from recsys.data.dataset import PreparedDataset
from recsys.models.two_tower_module import TwoTowerModule
from tests.conftest import K, compose_config


def test_a_run_saves_its_config_with_its_paths_and_open_interpolations(trained):
    saved = OmegaConf.load(trained["retrieval"].parent.parent / "config.yaml")
    raw = OmegaConf.to_container(saved, resolve=False)
    assert raw["paths"]["output_dir"] == str(trained["root"] / "tt")  # as this run used it
    assert raw["split"]["dir_suffix"].startswith("${split_dir_suffix:")  # another split, another directory


@pytest.mark.slow
def test_the_twin_replays_the_served_run_before_its_val_and_test_and_is_fitted_once(trained, tmp_path):
    from recsys.train import train

    calls = []

    def counting(cfg):
        calls.append(cfg)
        return train(cfg)

    served = trained["retrieval"]
    record = holdout_record(served, tmp_path / "cache", counting)
    assert len(calls) == 1 and calls[0].split.skip_last == 2 and calls[0].derive is None
    twin = TwoTowerModule.load_from_checkpoint(record["checkpoint"], weights_only=True)
    model = TwoTowerModule.load_from_checkpoint(served, weights_only=True)
    data, twin_data = (PreparedDataset.load(m.hparams.dataset_dir) for m in (model, twin))
    assert twin_data.path != data.path and twin_data.manifest["config"]["split"]["skip_last"] == 2
    assert data.manifest["config"]["split"].get("skip_last", 0) == 0  # the served data is untouched
    same = {k: v for k, v in model.hparams.items() if k != "dataset_dir"}
    assert {k: twin.hparams[k] for k in same} == same  # the same model, other data
    assert record["fit_s"] > 0 and record["served"] == str(served.resolve())
    assert holdout_record(served, tmp_path / "cache", counting) == record and len(calls) == 1  # cached


def test_a_checkpoint_without_its_run_config_is_refused_with_a_clear_message(trained, tmp_path):
    lone = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lone.parent.mkdir(parents=True)
    shutil.copy(trained["retrieval"], lone)
    with pytest.raises(FileNotFoundError, match="split.skip_last=2"):
        holdout_record(lone, tmp_path / "cache", lambda cfg: {})


@pytest.mark.slow
def test_ranker_with_holdout_auto_reports_the_fit(trained, tmp_path):
    from recsys.train import train

    overrides = [
        f"paths.root_dir={trained['root']}",
        "trainer=fast_dev",
        "experiment=ranker",
        f"retrieval_ckpt={trained['retrieval']}",
        "holdout_ckpt=auto",
        "model.use_embeddings=false",
        f"paths.output_dir={tmp_path}/ranker",
        f"data.num_candidates={K}",
        "data.batch_size=16",
        "model.hidden=[32]",
        "trainer.max_epochs=1",
        "~callbacks.rich_progress_bar",
    ]
    metrics = train(compose_config("train", overrides))
    cache = trained["root"] / "data" / "cache" / "holdout"
    assert metrics["holdout/checkpoint"].startswith(str(cache.resolve())) and metrics["holdout/fit_s"] > 0
    assert metrics["retrieval/ndcg@10"] == trained["metrics"]["retrieval/ndcg@10"]  # the served test lists


@pytest.mark.slow
def test_several_holdout_targets_give_several_lists_a_user_at_the_last_training_targets(trained, tmp_path):
    """``holdout_targets=2``: the twin holds out each user's last two served training targets (test
    rows, each with the history before it) and is selected on the one before them; the ranker's
    lists are exactly those rows, two for every user with enough history."""
    from recsys.data.splitting import TRAIN
    from recsys.train import train
    from tests.conftest import candidate_datamodule

    served = trained["retrieval"]
    record = holdout_record(served, tmp_path / "cache", train, targets=2)
    assert "_m2" in record["checkpoint"]
    twin = TwoTowerModule.load_from_checkpoint(record["checkpoint"], weights_only=True)
    data = PreparedDataset.load(
        TwoTowerModule.load_from_checkpoint(served, weights_only=True).hparams.dataset_dir
    )
    twin_data = PreparedDataset.load(twin.hparams.dataset_dir)
    split = twin_data.manifest["config"]["split"]
    assert (split["skip_last"], split["test_targets"]) == (2, 2) and twin_data.path.name.endswith(
        "_skip2_test2"
    )
    role = data.interactions(["user_idx", "role"]).to_pandas()
    train_pos = role[role["role"] == TRAIN].reset_index().groupby("user_idx")["index"]
    rows = twin_data.read_split("test", ["user_idx", "position"]).to_pandas()
    expected = train_pos.apply(lambda p: sorted(p.tolist()[-2:]) if len(p) >= 3 else None).dropna()
    got = rows.groupby("user_idx")["position"].apply(sorted)
    full = got[got.map(len) == 2]
    assert len(full) > 0 and all(full.loc[u] == expected.loc[u] for u in full.index)
    assert (role["role"].to_numpy()[rows["position"]] == TRAIN).all()  # never a served val or test target
    dm = candidate_datamodule(served, num_candidates=K, holdout_fraction=0, holdout_ckpt=record["checkpoint"])
    dm.setup()
    assert len(dm.splits["train"].candidates) == len(rows)


def test_zero_holdout_targets_is_refused_not_read_as_one(tmp_path):
    from recsys.candidates.holdout_fit import fit_holdout

    cfg = OmegaConf.create(
        {"holdout_ckpt": "auto", "holdout_targets": 0, "retrieval_ckpt": str(tmp_path / "x.ckpt"),
         "paths": {"cache_dir": str(tmp_path)}}
    )  # fmt: skip
    with pytest.raises(ValueError, match="holdout_targets must be >= 1, got 0"):
        fit_holdout(cfg, lambda run: {})
