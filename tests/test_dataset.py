from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys.data.dataset import COLD_IDX, PAD_IDX, PreparedDataset, item_arrays
from recsys.models.item_tower import compact_id_rows
from recsys.utils.artifacts import ManifestError, atomic_directory


def _tiny(path):
    items = pd.DataFrame(
        {
            "item_idx": [2, 3, 4],
            "item_id": ["a", "b", "c"],
            "title": ["A", "B", "C"],
            "text": ["ta", "tb", ""],
            "categories": [["Drama"], [], []],
            "train_count": [3, 1, 0],
            "is_warm": [True, True, False],
        }
    )
    row = pa.table(
        {
            "user_id": ["u"],
            "user_idx": pa.array([0], pa.int32()),
            "history": pa.array([[2, 3]], pa.list_(pa.int32())),
            "target": pa.array([4], pa.int32()),
            "timestamp": pa.array([1], pa.int64()),
            "position": pa.array([2], pa.int64()),
        }
    )
    interactions = pa.table(
        {
            "user_idx": pa.array([0, 0, 0], pa.int32()),
            "item_idx": pa.array([2, 3, 4], pa.int32()),
            "timestamp": pa.array([0, 0, 1], pa.int64()),
            "role": pa.array([0, 0, 2], pa.int8()),
        }
    )
    emb = np.zeros((5, 4), np.float32)
    emb[2:4, 0] = 1.0
    info = {"n_catalog_items": 3, "n_users": 1}
    splits = {"train": row, "val": row, "test": row}
    return PreparedDataset.write(path, items, splits, interactions, emb, info)


def test_roundtrip_and_cold_index_mapping(tmp_path):
    _tiny(tmp_path / "ds")
    ds = PreparedDataset.load(tmp_path / "ds")
    assert ds.n_items == 3 and ds.text_embeddings().shape == (5, 4)
    assert ds.read_split("test").to_pylist()[0]["history"] == [2, 3]
    # cold-index mapping: warm items keep their row, non-warm items use the cold row 1
    assert compact_id_rows(item_arrays(ds)["is_warm"]).tolist() == [PAD_IDX, COLD_IDX, 2, 3, COLD_IDX]


def test_tampered_file_is_refused(tmp_path):
    _tiny(tmp_path / "ds")
    path = tmp_path / "ds" / "test.parquet"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ManifestError, match=r"test.parquet: sha256 .* does not match manifest.json"):
        PreparedDataset.load(tmp_path / "ds")
    PreparedDataset.load(tmp_path / "ds", verify=False)  # explicit opt-out still reads


def test_missing_file_and_missing_manifest(tmp_path):
    _tiny(tmp_path / "ds")
    (tmp_path / "ds" / "val.parquet").unlink()
    with pytest.raises(ManifestError, match="val.parquet: listed in manifest.json but missing"):
        PreparedDataset.load(tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest.json: missing"):
        PreparedDataset.load(tmp_path / "ds")


def test_manifest_without_dataset_files_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(ManifestError, match="lists no items.parquet"):
        PreparedDataset.load(tmp_path / "x")


def test_crash_during_write_keeps_previous_version(tmp_path):
    _tiny(tmp_path / "ds")
    before = (tmp_path / "ds" / "manifest.json").read_text()
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(tmp_path / "ds") as staging:
        (staging / "items.parquet").write_text("half")
        raise RuntimeError("boom")
    assert (tmp_path / "ds" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging leftovers
    PreparedDataset.load(tmp_path / "ds")


def test_crash_on_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "new") as staging:
        (staging / "a").write_text("x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
