"""Bring-your-own-data: canonical CSV/Parquet tables prepare and train like the built-in sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.sources.jsonl import DataFormatError
from recsys.data.sources.tables import CanonicalTablesSource, to_epoch_ms
from tests.conftest import compose_config


def _write_tables(root, n_users=60, n_items=40, fmt="csv"):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=8, replace=False)
        for step, i in enumerate(items):
            ts = 1_600_000_000 + 3600 * step + u
            rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": ts})
    interactions = pd.DataFrame(rows)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Film number {i}" for i in range(n_items)],
            "categories": ["Drama|Comedy" if i % 2 else "Horror" for i in range(n_items)],
            "description": [f"a story about thing {i % 7}" for i in range(n_items)],
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        interactions.to_csv(root / "interactions.csv", index=False)
        items.to_csv(root / "items.csv", index=False)
    else:
        interactions.to_parquet(root / "interactions.parquet")
        items.to_parquet(root / "items.parquet")
    return interactions, items


def test_epoch_seconds_milliseconds_and_iso_strings():
    ms = to_epoch_ms(pd.Series(["1600000000", "1600000000000", "2020-09-13T12:26:40Z", "soon"]))
    assert ms[:3].tolist() == [1_600_000_000_000] * 3 and np.isnan(ms[3])


def test_source_reads_csv_and_counts_bad_rows(tmp_path):
    interactions, _ = _write_tables(tmp_path)
    bad = pd.concat([interactions, pd.DataFrame([{"user_id": "u1", "item_id": "i1", "timestamp": "never"}])])
    bad.to_csv(tmp_path / "interactions.csv", index=False)
    source = CanonicalTablesSource(str(tmp_path), "interactions.csv", "items.csv")
    (block,) = list(source.iter_interactions())
    assert len(block) == len(interactions) and source.stats["interaction_rows_unparseable"] == 1
    items = source.read_items()
    assert items.loc[1, "categories"] == ["Drama", "Comedy"]
    assert items.loc[1, "text"].startswith("Title: Film number 1 [SEP] Genre: Drama, Comedy")


def test_missing_column_is_named(tmp_path):
    _write_tables(tmp_path)
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}).to_csv(tmp_path / "interactions.csv", index=False)
    source = CanonicalTablesSource(str(tmp_path), "interactions.csv", "items.csv")
    with pytest.raises(DataFormatError, match=r"interactions.csv: missing column\(s\) \['timestamp'\]"):
        list(source.iter_interactions())


def test_own_tables_train_end_to_end(tmp_path):
    from recsys.train import train

    _write_tables(tmp_path / "raw", fmt="parquet")
    cfg = compose_config(
        "train",
        [
            "experiment=two_tower",
            "data=tables",
            f"data.raw_dir={tmp_path / 'raw'}",
            "text_encoder=hashing",
            "model.dim=16",
            "model.num_global_negatives=16",
            "data.batch_size=32",
            "trainer=fast_dev",
            "~callbacks.rich_progress_bar",
            "derive=null",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/out",
        ],
    )
    metrics = train(cfg)
    assert metrics["n_users"] == 60 and metrics["n_items"] == 40
    assert 0 <= metrics["retrieval/ndcg@10"] <= 1


@pytest.mark.parametrize("content", ["", "u1,i1,1600000000\nu2,i2,1600000001\n"])
def test_empty_or_headerless_table_is_an_error_naming_the_file(tmp_path, content):
    _write_tables(tmp_path)
    (tmp_path / "interactions.csv").write_text(content)
    source = CanonicalTablesSource(str(tmp_path), "interactions.csv", "items.csv")
    with pytest.raises(DataFormatError, match=r"interactions\.csv: (the file is empty|missing column)"):
        list(source.iter_interactions())


@pytest.mark.slow
def test_user_errors_end_in_one_line_without_a_traceback(tmp_path):
    """Bad data and a missing checkpoint: exit 2 with one `error:` line naming the file; with
    HYDRA_FULL_ERROR=1 the traceback is there."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "interactions.csv").write_text("")
    bad_data = [
        "recsys.prepare",
        "data=tables",
        f"data.raw_dir={tmp_path / 'raw'}",
        "data.preparer.source.interactions=interactions.csv",
        "text_encoder=hashing",
        f"paths.root_dir={tmp_path}",
    ]
    missing_ckpt = ["recsys.evaluate", f"ckpt_path={tmp_path / 'nowhere.ckpt'}", f"paths.root_dir={tmp_path}"]
    for args, named in ((bad_data, "interactions.csv: the file is empty"), (missing_ckpt, "nowhere.ckpt")):
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(lines) == 1 and named in lines[0], done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    full = subprocess.run(
        [sys.executable, "-m", *bad_data],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert full.returncode != 0 and "Traceback" in full.stderr and "the file is empty" in full.stderr
