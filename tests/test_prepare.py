"""End-to-end prepare: synthetic through the CLI, ML-100K through composed Hydra config."""

from __future__ import annotations

import json
import subprocess
import sys

import hydra
import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import PreparedDataset
from tests.conftest import REPO_ROOT, compose_config


def _prepare(tmp_path, data: str, extra: list[str] | None = None) -> PreparedDataset:
    cfg = compose_config(
        "prepare", [f"data={data}", f"paths.root_dir={tmp_path}", "text_encoder=hashing", *(extra or [])]
    )
    return hydra.utils.instantiate(cfg.data.preparer).ensure()


@pytest.mark.slow
def test_cli_prepares_synthetic(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.prepare",
            "data=synthetic",
            f"paths.root_dir={tmp_path}",
            "text_encoder=hashing",
            "hydra.job_logging.root.level=WARNING",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ds = PreparedDataset.load(tmp_path / "data" / "processed" / "synthetic")
    m = ds.manifest
    written = json.loads((tmp_path / "data" / "raw" / "synthetic" / "generator.json").read_text())["written"]
    stats = m["filter_stats"]
    # the reader accounts for every line the generator wrote, including the ones it corrupted
    assert stats["reviews_malformed_lines"] == written["reviews"]["malformed"] > 0
    assert stats["reviews_blank_lines"] == written["reviews"]["blank"]
    assert stats["reviews_records_read"] + stats["reviews_malformed_lines"] == written["n_reviews"]
    dropped = sum(
        stats[k]
        for k in (
            "dropped_before_min_timestamp",
            "dropped_low_rating",
            "dropped_unverified",
            "dropped_duplicates",
            "dropped_kcore",
        )
    )
    assert stats["reviews_records_read"] - dropped == m["n_interactions"]
    assert m["n_catalog_items"] == 3000 and len(ds.items) == 3000  # every item with metadata
    assert 1000 < m["n_users"] <= 2000 and m["n_items_interacted"] < m["n_catalog_items"]
    assert m["n_rows"]["test"] == m["n_users"]
    items = ds.items
    assert items["item_idx"].tolist() == list(range(2, 3002))
    assert (items["is_warm"] == (items["train_count"] > 0)).all()
    # warm items come first
    assert items["is_warm"].to_numpy()[: items["is_warm"].sum()].all()
    # interaction rows reference catalog items only, never padding/cold
    for split in ("train", "val", "test"):
        t = ds.read_split(split).to_pandas()
        assert t["target"].between(2, 3001).all()
        assert all(np.all((h >= 2) & (h <= 3001)) and len(h) <= 100 for h in t["history"])
    # the cold segment exists: some test targets were never seen in training
    test = ds.read_split("test").to_pandas()
    warm = items.set_index("item_idx")["is_warm"]
    assert (~warm.loc[test["target"]]).sum() > 0
    assert "n_interactions" in out.stdout  # the summary table is printed


def test_prepare_is_skipped_when_current_and_redone_when_config_changes(tmp_path):
    first = _prepare(tmp_path, "synthetic")
    created = first.manifest["created_at"]
    again = _prepare(tmp_path, "synthetic")
    assert again.manifest["created_at"] == created and again.manifest["files"] == first.manifest["files"]
    changed = _prepare(tmp_path, "synthetic", ["data.max_history=5"])
    assert changed.manifest["config"]["max_history"] == 5
    assert max(len(h) for h in changed.read_split("train").column("history").to_pylist()) == 5
    # the text cache made the second encode free
    assert changed.manifest["text_embeddings"]["encoded"] == 0


def test_synthetic_is_deterministic(tmp_path):
    a = _prepare(tmp_path / "a", "synthetic", ["data.preparer.source.generator.n_users=300"])
    b = _prepare(tmp_path / "b", "synthetic", ["data.preparer.source.generator.n_users=300"])
    assert a.manifest["files"] == b.manifest["files"]


@pytest.mark.ml100k
def test_movielens_100k(tmp_path, ml100k_dir):
    ds = _prepare(tmp_path, "movielens_100k", [f"data.raw_dir={ml100k_dir}"])
    m = ds.manifest
    assert (m["n_users"], m["n_catalog_items"], m["n_interactions"]) == (943, 1682, 100_000)
    assert m["n_rows"]["val"] == m["n_rows"]["test"] == 943
    # each user's test target is their last rating in u.data order among equal timestamps
    raw = pd.read_csv(ml100k_dir / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    raw["row"] = np.arange(len(raw))
    last = raw.sort_values(["u", "t", "row"]).groupby("u").tail(1).set_index("u")["i"].astype(str)
    second = raw.sort_values(["u", "t", "row"]).groupby("u").nth(-2).set_index("u")["i"].astype(str)
    idx_to_id = ds.items.set_index("item_idx")["item_id"]
    test = ds.read_split("test").to_pandas().set_index("user_id")
    val = ds.read_split("val").to_pandas().set_index("user_id")
    got_test = idx_to_id.loc[test["target"]].to_numpy()
    assert (got_test == last.loc[test.index.astype(int)].to_numpy()).all()
    assert (idx_to_id.loc[val["target"]].to_numpy() == second.loc[val.index.astype(int)].to_numpy()).all()
    # ties genuinely occur in u.data, so stability is being exercised
    assert raw.duplicated(["u", "t"]).any()
    # train rows: every interaction except the first, val and test of each user
    assert m["n_rows"]["train"] == 100_000 - 3 * 943
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story" and list(toy["categories"]) == ["Animation", "Comedy", "Kids"]
    assert toy["text"] == "Title: Toy Story [SEP] Genre: Animation, Comedy, Kids [SEP] Details: Year: 1995"


def test_global_temporal_split_end_to_end(tmp_path):
    ds = _prepare(
        tmp_path, "synthetic", ["split=global_temporal", "data.preparer.source.generator.n_users=400"]
    )
    assert ds.manifest["config"]["split"]["name"] == "global_temporal"
    train = ds.read_split("train").to_pandas()
    test = ds.read_split("test").to_pandas()
    val = ds.read_split("val").to_pandas()
    assert len(train) and len(val) and len(test)
    # one global timeline: every train target precedes every val target, which precede test targets
    assert train["timestamp"].max() < val["timestamp"].min()
    assert val["timestamp"].max() < test["timestamp"].min()
    assert test["user_id"].is_unique and val["user_id"].is_unique


def test_two_tower_full_prepares_with_hashing_text(tmp_path):
    """The scale experiment's MiniLM settings live in a text_encoder option, so another encoder
    replaces them whole (before, `precision` reached the hashing encoder and killed the run)."""

    cfg = compose_config(
        "train",
        [
            "experiment=two_tower_full",
            "text_encoder=hashing",
            "data.preparer.source.generator.n_items=300",
            "data.preparer.source.generator.n_users=200",
            f"paths.root_dir={tmp_path}",
        ],
    )
    dataset = hydra.utils.instantiate(cfg.data.preparer, progress=False).run()
    assert dataset.manifest["config"]["text_encoder"]["type"] == "HashingTextEncoder"
    assert dataset.text_embeddings().shape[1] == 256 and dataset.n_users > 0
