"""Id-only sequence files (the S3-Rec benchmark format): both layouts, plain and gzipped, counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from recsys.data.dataset import PreparedDataset
from recsys.data.filtering import InteractionFilters
from recsys.data.preparation import DatasetPreparer
from recsys.data.seen_items import SeenItems
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.sources.sequences import SequenceFileSource
from recsys.data.splitting import GlobalTemporalSplitter, LeaveOneOutSplitter
from recsys.data.text_embeddings import HashingTextEncoder
from tests.conftest import SHARED_DATA, compose_config

# 5 users; one malformed line (a user with no item) and one blank line: 7 lines, 5 valid
PER_USER = """\
1 10 11 12 13
2 11 12 10
3 12 13 14 10 11
bad
4 10 14 13 12

5 13 10 11 14 12 13
"""
# the same interactions as `user item` pairs, users interleaved, plus one line with 3 fields
PAIRS = [
    ("1", "10"), ("2", "11"), ("1", "11"), ("2", "12"), ("1", "12"), ("2", "10"), ("1", "13"),
    ("3", "12"), ("3", "13"), ("3", "14"), ("3", "10"), ("3", "11"),
    ("4", "10"), ("4", "14"), ("4", "13"), ("4", "12"),
    ("5", "13"), ("5", "10"), ("5", "11"), ("5", "14"), ("5", "12"), ("5", "13"),
]  # fmt: skip


def _write(path: Path, text: str) -> None:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def _pairs_text() -> str:
    lines = [f"{u} {i}" for u, i in PAIRS]
    lines.insert(5, "2 11 extra")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["seq.txt", "seq.txt.gz"])
def test_per_user_lines_counted_exactly(tmp_path, name):
    _write(tmp_path / name, PER_USER)
    source = SequenceFileSource(str(tmp_path), name, layout="per_user")
    (block,) = list(source.iter_interactions())
    assert source.stats == {"lines_read": 7, "malformed_lines": 2, "interaction_records_read": 22}
    user5 = block[block["user_id"] == "5"]
    assert user5["item_id"].tolist() == ["13", "10", "11", "14", "12", "13"]
    assert user5["timestamp"].tolist() == [0, 1, 2, 3, 4, 5]  # ordinals in file order


@pytest.mark.parametrize("name", ["pairs.txt", "pairs.txt.gz"])
def test_pairs_lines_give_the_same_sequences(tmp_path, name):
    _write(tmp_path / name, _pairs_text())
    _write(tmp_path / "seq.txt", PER_USER)
    pairs = SequenceFileSource(str(tmp_path), name, layout="pairs")
    (got,) = list(pairs.iter_interactions())
    assert pairs.stats == {"lines_read": 23, "malformed_lines": 1, "interaction_records_read": 22}
    (want,) = list(SequenceFileSource(str(tmp_path), "seq.txt").iter_interactions())
    key = ["user_id", "timestamp"]
    got, want = got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True)
    assert got[["user_id", "item_id", "timestamp"]].equals(want[["user_id", "item_id", "timestamp"]])


def test_no_valid_line_is_an_error_naming_the_file(tmp_path):
    _write(tmp_path / "seq.txt", "only_users\nno_items\n")
    with pytest.raises(DataFormatError, match=r"seq\.txt: no valid per_user lines.*2 malformed of 2"):
        list(SequenceFileSource(str(tmp_path), "seq.txt").iter_interactions())
    with pytest.raises(ValueError, match="layout must be one of"):
        SequenceFileSource(str(tmp_path), "seq.txt", layout="columns")


def _preparer(tmp_path: Path, **options) -> DatasetPreparer:
    """The tiny file ``seq.txt`` in ``tmp_path`` prepared into ``tmp_path / "prepared"``."""
    return DatasetPreparer(
        SequenceFileSource(str(tmp_path), "seq.txt", name="tiny"),
        str(tmp_path / "prepared"),
        HashingTextEncoder(dim=8),
        filters=InteractionFilters(None, None, False, False, 0),
        progress=False,
        **options,
    )


def _prepare(tmp_path: Path, exclude_seen: bool = True, splitter=None) -> PreparedDataset:
    tmp_path.mkdir(parents=True, exist_ok=True)
    _write(tmp_path / "seq.txt", PER_USER)
    return _preparer(
        tmp_path, exclude_seen=exclude_seen, **({"splitter": splitter} if splitter else {})
    ).run()


def test_prepared_manifest_says_ordinal_time_and_no_text(tmp_path):
    dataset = _prepare(tmp_path)
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    assert manifest["time"] == "ordinal" and dataset.time_is_ordinal
    assert manifest["has_text"] is False and manifest["text_embeddings"]["dim"] == 0
    assert dataset.text_embeddings().shape == (dataset.n_items + 2, 0)  # no zero rows posing as text
    assert manifest["n_users"] == 5 and manifest["n_interactions"] == 22
    assert manifest["filter_stats"]["malformed_lines"] == 2
    # train rows: every training target after a user's first item (lengths 4, 3, 5, 4, 6 -> 1+0+2+1+3)
    assert manifest["n_rows"] == {"train": 7, "val": 5, "test": 5}


def test_global_temporal_split_refuses_ordinal_time(tmp_path):
    with pytest.raises(DataFormatError, match="no timestamps.*split=leave_one_out"):
        _prepare(tmp_path, splitter=GlobalTemporalSplitter())


def test_exclude_seen_switch_empties_seen_sets(tmp_path):
    excluded = SeenItems.for_split(_prepare(tmp_path / "a"), "test")
    kept = SeenItems.for_split(_prepare(tmp_path / "b", exclude_seen=False), "test")
    # user "5" (user_idx 4, test row 4) has read 5 distinct items before their test target (a re-read 13)
    assert len(excluded.batch(np.array([4]))[1]) == 5
    assert len(kept.indices) == 0 and len(kept.indptr) == 6
    assert PreparedDataset.load(tmp_path / "b" / "prepared").exclude_seen is False


def test_seen_items_are_per_row_when_a_user_has_several_test_rows(tmp_path):
    """``split.test_targets=2``: user "5" (13 10 11 14 12 13) has test rows for 12 and 13, each
    excluding only what came before it (the row for 13 also excludes 12, the earlier target). Item
    14 is no training target under this split, so it leaves the catalog."""
    dataset = _prepare(tmp_path, splitter=LeaveOneOutSplitter(test_targets=2))
    rows = dataset.read_split("test", ["user_idx", "target"]).to_pandas()
    seen = SeenItems.for_split(dataset, "test")
    ids = dict(zip(dataset.items["item_idx"], dataset.items["item_id"], strict=True))
    mine = np.flatnonzero(rows["user_idx"].to_numpy() == 4)
    got = [
        (ids[int(rows["target"][r])], sorted(ids[int(i)] for i in seen.batch(np.array([r]))[1])) for r in mine
    ]
    assert got == [("12", ["10", "11", "13"]), ("13", ["10", "11", "12", "13"])]


@pytest.mark.parametrize(
    ("name", "exclude_seen"), [("beauty", True), ("sports", True), ("toys", True), ("yelp", False)]
)
def test_benchmark_data_configs(tmp_path, name, exclude_seen):
    cfg = compose_config("train", ["experiment=two_tower", f"data={name}", f"paths.root_dir={tmp_path}"])
    assert cfg.data.exclude_seen is exclude_seen and cfg.data.preparer.exclude_seen is exclude_seen
    assert cfg.data.preparer.source.raw_dir.endswith("s3rec") and cfg.data.name == name
    assert cfg.data.preparer.filters.kcore == 0 and cfg.data.preparer.filters.deduplicate is False


def test_beauty_file_prepares_to_its_published_counts(tmp_path):
    if not (SHARED_DATA / "s3rec" / "Beauty.txt.gz").is_file():
        pytest.skip(f"S3-Rec files not found under {SHARED_DATA / 's3rec'}")
    source = SequenceFileSource(str(SHARED_DATA / "s3rec"), "Beauty.txt.gz", name="beauty")
    n = sum(len(block) for block in source.iter_interactions())
    # SOURCE.md: 22,363 users / 12,101 items / 198,502 interactions
    assert n == 198_502 and source.stats["lines_read"] == 22_363 and source.stats["malformed_lines"] == 0


def _ensure_in_a_process(directory: str, start) -> str:
    preparer = _preparer(Path(directory))
    start.wait()  # every process asks at the same moment
    return preparer.ensure().manifest["config_fingerprint"]


@pytest.mark.slow  # eight processes preparing one dataset, three rounds
def test_runs_started_together_prepare_one_dataset_in_turn(tmp_path):
    """Eight processes ask for the same missing dataset at once (a benchmark's parallel seeds),
    three times over: each gets it (one prepares, the others wait and find it current), none
    fails on the directory swap, no staging directory is left behind."""
    import multiprocessing as mp
    import shutil

    _write(tmp_path / "seq.txt", PER_USER)
    context = mp.get_context("spawn")
    with context.Manager() as manager, context.Pool(8) as pool:
        for _ in range(3):
            shutil.rmtree(tmp_path / "prepared", ignore_errors=True)
            start = manager.Barrier(8)
            prints = pool.starmap(_ensure_in_a_process, [(str(tmp_path), start)] * 8)
            assert len(set(prints)) == 1
    assert PreparedDataset.load(tmp_path / "prepared").n_users == 5
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]
