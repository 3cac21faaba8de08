"""Amazon ingestion: every count in the manifest, and clear errors for bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from recsys.data.dataset import PreparedDataset
from recsys.data.filtering import InteractionFilters
from recsys.data.preparation import DatasetPreparer
from recsys.data.sources.amazon import AmazonReviewsSource
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.text_embeddings import HashingTextEncoder
from tests.fixtures.make_amazon_fixture import EXPECTED, write_fixture


@pytest.fixture()
def fixture_dataset(tmp_path) -> PreparedDataset:
    raw = write_fixture(tmp_path / "raw")
    preparer = DatasetPreparer(
        source=AmazonReviewsSource(raw_dir=str(raw), block_size=64),  # tiny blocks: many chunks
        processed_dir=str(tmp_path / "processed"),
        text_encoder=HashingTextEncoder(dim=32),
        filters=InteractionFilters(kcore=2),
        progress=False,
    )
    return preparer.run()


def test_manifest_counts_match_hand_computed(fixture_dataset):
    m = fixture_dataset.manifest
    for key in (
        "n_users",
        "n_interactions",
        "n_items_interacted",
        "n_catalog_items",
        "n_warm_items",
        "n_rows",
    ):
        assert m[key] == EXPECTED[key], key
    stats = m["filter_stats"]
    for key, value in EXPECTED["filter_stats"].items():
        assert stats[key] == value, key


def test_catalog_rows_and_indexing(fixture_dataset):
    items = fixture_dataset.items.set_index("item_id")
    # warm items first (by id), then the rest (by id)
    # i4 (no metadata, only ever a test target) is not in the catalog
    assert items["item_idx"].to_dict() == {"i1": 2, "i6": 3, "i2": 4, "i3": 5, "i7": 6}
    assert items.loc["i1", "title"] == "Amélie"
    assert "<" not in items.loc["i1", "text"] and "Paris" in items.loc["i1", "text"]
    assert items.loc["i1", "text"].startswith("Title: Amélie [SEP] Genre: Independent, International")
    assert (
        "Director: Jean-Pierre Jeunet" in items.loc["i1", "text"] and "Year: 2001" in items.loc["i1", "text"]
    )
    assert list(items.loc["i2", "categories"]) == ["Comedy", "Romance"]  # backfilled from details Genre
    assert items["train_count"].to_dict() == {"i1": 3, "i6": 2, "i2": 0, "i3": 0, "i7": 0}
    emb = fixture_dataset.text_embeddings()
    assert emb.shape == (7, 32)
    assert np.all(emb[:2] == 0)  # padding, cold
    norms = np.linalg.norm(emb[[2, 3, 4, 5, 6]], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_split_rows(fixture_dataset):
    test = fixture_dataset.read_split("test").to_pandas().set_index("user_id")
    assert list(test.index) == ["u3"]  # u1's and u2's test target (i4) left the catalog
    assert test.loc["u3", "target"] == 4 and list(test.loc["u3", "history"]) == [2]  # i2 after i1
    val = fixture_dataset.read_split("val").to_pandas().set_index("user_id")
    assert set(val.index) == {"u1", "u2"} and val.loc["u2", "target"] == 4
    train = fixture_dataset.read_split("train").to_pandas()
    assert sorted(map(list, train["history"])) == [[3], [3]] and set(train["target"]) == {2}


@pytest.mark.parametrize("which", ["reviews", "meta"])
def test_missing_file_names_path(tmp_path, which):
    raw = write_fixture(tmp_path / "raw")
    target = raw / ("Movies_and_TV.jsonl.gz" if which == "reviews" else "meta_Movies_and_TV.jsonl.gz")
    target.unlink()
    source = AmazonReviewsSource(raw_dir=str(raw))
    with pytest.raises(DataFormatError, match=f"{target}: file not found"):
        list(source.iter_interactions()) if which == "reviews" else source.read_items()


def test_empty_file_is_a_clear_error(tmp_path):
    raw = write_fixture(tmp_path / "raw")
    (raw / "Movies_and_TV.jsonl.gz").write_bytes(b"")
    with pytest.raises(DataFormatError, match="Movies_and_TV.jsonl.gz: no valid review records"):
        list(AmazonReviewsSource(raw_dir=str(raw)).iter_interactions())


def test_file_with_only_garbage_is_a_clear_error(tmp_path):
    raw = write_fixture(tmp_path / "raw")
    with gzip.open(raw / "meta_Movies_and_TV.jsonl.gz", "wt") as fh:
        fh.write("not json\n\n{broken\n" + json.dumps({"title": "no id"}) + "\n")
    with pytest.raises(
        DataFormatError,
        match=r"meta_Movies_and_TV.jsonl.gz: no valid metadata records \(3 malformed, 1 blank",
    ):
        AmazonReviewsSource(raw_dir=str(raw)).read_items()


def test_unreadable_gzip_names_path(tmp_path):
    raw = write_fixture(tmp_path / "raw")
    path = raw / "Movies_and_TV.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-that-is-not-deflate" * 10)
    with pytest.raises(DataFormatError, match=f"{path}: cannot decompress/read"):
        list(AmazonReviewsSource(raw_dir=str(raw)).iter_interactions())


def test_plain_uncompressed_jsonl_is_accepted(tmp_path):
    raw = write_fixture(tmp_path / "raw")
    for name in ("Movies_and_TV.jsonl.gz", "meta_Movies_and_TV.jsonl.gz"):
        (raw / name.replace(".gz", "")).write_bytes(gzip.decompress((raw / name).read_bytes()))
    source = AmazonReviewsSource(
        raw_dir=str(raw), reviews_file="Movies_and_TV.jsonl", meta_file="meta_Movies_and_TV.jsonl"
    )
    rows = sum(len(b) for b in source.iter_interactions())
    assert rows == EXPECTED["filter_stats"]["reviews_records_read"]
