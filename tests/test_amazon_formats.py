"""Amazon 2014 / 2018 / 2023 files through one reader: exact counts on hand-written pairs and on
the real 2018 files (skipped when ../shared/data/amazon2018 is absent), and clear format errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import hydra
import pytest

from recsys.data.dataset import PreparedDataset
from recsys.data.filtering import InteractionFilters
from recsys.data.preparation import DatasetPreparer
from recsys.data.sources.amazon import AmazonReviewsSource
from recsys.data.sources.amazon_formats import parse_price, parse_rank
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.text_embeddings import HashingTextEncoder
from tests.conftest import SHARED_DATA, compose_config
from tests.fixtures.make_amazon_fixture import EXPECTED as EXPECTED_2023
from tests.fixtures.make_amazon_fixture import write_fixture as write_2023_fixture

DAY = 86_400


def review_2014(user: str, item: str, overall: float, day: int) -> str:
    """A 2014 review line: strict JSON, seconds, no verified flag."""
    return json.dumps(
        {"reviewerID": user, "asin": item, "overall": overall, "unixReviewTime": 1_420_070_400 + day * DAY}
    )


REVIEWS_2014 = [
    review_2014("A", "b1", 5.0, 1),  # kept
    review_2014("A", "b2", 4.0, 2),  # kept (A's val target)
    review_2014("A", "b3", 5.0, 3),  # kept (A's test target)
    review_2014("B", "b1", 3.0, 4),  # kept
    review_2014("B", "b4", 4.0, 5),  # kept: B's training target; b4 has no metadata
    review_2014("B", "b2", 5.0, 6),  # kept
    review_2014("C", "b2", 4.0, 7),  # kept
    review_2014("C", "b1", 5.0, 8),  # kept
    review_2014("C", "b3", 1.0, 9),  # overall 1 -> dropped_low_rating
    review_2014("C", "b3", 4.0, 10),  # kept
    review_2014("A", "b1", 2.0, 11),  # overall 2 -> dropped_low_rating
    review_2014("B", "b1", 4.0, 12),  # (B, b1) again -> dropped_duplicates
    review_2014("B", "b3", 5.0, 13),  # kept (B's test target)
    '{"reviewerID": "Z", "asin": ',  # truncated -> malformed
    json.dumps({"reviewerID": "Z", "overall": 5.0, "unixReviewTime": 1}),  # no asin -> malformed
    "",  # blank
]

META_2014 = [
    # Python literals, as the 2014 files are written (single quotes, nested category paths)
    "{'asin': 'b1', 'title': 'Lego Set', 'price': 12.99, 'brand': 'Lego', "
    "'salesRank': {'Toys & Games': 1234}, 'categories': [['Toys & Games', 'Building Toys']]}",
    "{'asin': 'b2', 'title': \"Rubik's Cube\", 'description': 'A puzzle.', 'price': 9.5, "
    "'categories': [['Toys & Games', 'Puzzles'], ['Toys & Games']]}",
    '{"asin": "b3", "title": "Kite", "brand": "Sky"}',  # strict JSON is a Python literal too
    "{'asin': 'b5', 'title': 'Never reviewed'}",
    "{'asin': 'b1', 'title': 'Lego again'}",  # duplicate -> meta_duplicate_items (first wins)
    "{'asin': 'b6', 'title': __import__('os').getcwd()}",  # code, not a literal -> malformed
    "{'title': 'no id'}",  # no asin -> malformed
    "",  # blank
]

EXPECTED_2014 = {
    "n_users": 3,
    "n_catalog_items": 5,  # b1, b2, b3, b5 (metadata) + b4 (trained, no metadata)
    "n_interactions": 10,
    "filter_stats": {
        "reviews_records_read": 13,
        "reviews_malformed_lines": 2,
        "reviews_blank_lines": 1,
        "dropped_low_rating": 2,
        "dropped_duplicates": 1,
        "meta_records_read": 5,
        "meta_malformed_lines": 2,
        "meta_blank_lines": 1,
        "meta_duplicate_items": 1,
        "interacted_items_with_metadata": 3,
        "interacted_items_without_metadata": 1,
    },
}


def write_pair(
    raw: Path, reviews: list[str], meta: list[str], names=("reviews_Toys_5.json.gz", "meta_Toys.json.gz")
):
    raw.mkdir(parents=True, exist_ok=True)
    for name, lines in zip(names, (reviews, meta), strict=True):
        with gzip.open(raw / name, "wt", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return raw


def prepare(source: AmazonReviewsSource, out: Path, **filters) -> PreparedDataset:
    return DatasetPreparer(
        source=source,
        processed_dir=str(out),
        text_encoder=HashingTextEncoder(dim=16),
        filters=InteractionFilters(min_timestamp=None, kcore=0, **filters),
        progress=False,
    ).run()


@pytest.mark.parametrize("fmt", ["2014", "auto"])
def test_2014_pair_prepares_to_exact_counts(tmp_path, fmt):
    raw = write_pair(tmp_path / "raw", REVIEWS_2014, META_2014)
    source = AmazonReviewsSource(raw_dir=str(raw), reviews_file=None, meta_file=None, format=fmt)
    dataset = prepare(source, tmp_path / "out")  # require_verified defaults to true
    m = dataset.manifest
    for key in ("n_users", "n_catalog_items", "n_interactions"):
        assert m[key] == EXPECTED_2014[key], key
    for key, value in EXPECTED_2014["filter_stats"].items():
        assert m["filter_stats"][key] == value, key
    assert "dropped_unverified" not in m["filter_stats"]  # 2014 has no flag: the filter cannot apply
    assert m["filters_applied"]["require_verified"] is False
    assert m["filters_skipped"] == {"require_verified": "the source has no verified-purchase flag"}
    assert m["source_info"] == {"format": "2014", "format_requested": fmt}
    assert m["config"]["filters"]["require_verified"] is True  # what was asked stays on record
    items = dataset.items.set_index("item_id")
    assert items.loc["b1", "title"] == "Lego Set"  # the first of the duplicate records
    assert (
        "Brand: Lego" in items.loc["b1", "text"]
        and "Category: Toys & Games, Building Toys" in items.loc["b1", "text"]
    )
    assert items.loc["b4", "text"] == ""  # trained, no metadata
    interactions = dataset.interactions(["user_idx", "timestamp"])
    # seconds -> milliseconds: the first review, day 1 after 2015-01-01
    assert interactions["timestamp"].to_numpy().min() == (1_420_070_400 + DAY) * 1000


def test_2014_attributes_parsed_safely(tmp_path):
    raw = write_pair(tmp_path / "raw", REVIEWS_2014, META_2014)
    source = AmazonReviewsSource(raw_dir=str(raw), reviews_file=None, meta_file=None)
    attributes = source.read_item_attributes().set_index("item_id")
    assert list(attributes.index) == ["b1", "b2", "b3", "b5"]
    assert attributes.loc["b1", "price"] == 12.99 and attributes.loc["b1", "sales_rank"] == 1234
    assert attributes.loc["b1", "brand"] == "Lego" and attributes.loc["b1", "main_category"] == "Toys & Games"
    assert attributes.loc["b3", "brand"] == "Sky"
    assert source.stats["meta_malformed_lines"] == 2  # the __import__ line was never evaluated


def test_2023_pair_auto_equals_explicit(tmp_path):
    """The 2023 path reads as before: format auto and 2023 give identical files and the fixture's counts."""
    raw = write_2023_fixture(tmp_path / "raw")
    hashes = {}
    for fmt in ("2023", "auto"):
        dataset = prepare(
            AmazonReviewsSource(raw_dir=str(raw), format=fmt),
            tmp_path / fmt,
            min_rating=3.0,
            require_verified=True,
        )
        hashes[fmt] = dataset.manifest["files"]
        stats = dataset.manifest["filter_stats"]
        for key in (
            "reviews_records_read",
            "reviews_malformed_lines",
            "meta_records_read",
            "meta_duplicate_items",
        ):
            assert stats[key] == EXPECTED_2023["filter_stats"][key], key
        assert dataset.manifest["source_info"]["format"] == "2023"
        assert "filters_skipped" not in dataset.manifest
    assert hashes["2023"] == hashes["auto"]


def test_record_fitting_no_format_names_file_line_and_fields(tmp_path):
    lines = ["not json", json.dumps({"user": "u", "item": "i", "stars": 5})]
    raw = write_pair(tmp_path / "raw", lines, META_2014)
    source = AmazonReviewsSource(raw_dir=str(raw), reviews_file=None, meta_file=None)
    with pytest.raises(
        DataFormatError,
        match=r"reviews_Toys_5.json.gz: line 2: .*fits no Amazon review format.*item, stars, user",
    ):
        list(source.iter_interactions())


def test_wrong_explicit_format_names_the_missing_field(tmp_path):
    raw = write_2023_fixture(tmp_path / "raw")
    source = AmazonReviewsSource(raw_dir=str(raw), format="2018")
    with pytest.raises(
        DataFormatError, match=r"line 1: data.format=2018 expects field 'reviewerID'.*looks like the 2023"
    ):
        list(source.iter_interactions())
    with pytest.raises(ValueError, match="data.format must be one of"):
        AmazonReviewsSource(raw_dir=str(raw), format="2019")


def test_ambiguous_directory_is_a_clear_error(tmp_path):
    raw = write_pair(tmp_path / "raw", REVIEWS_2014, META_2014)
    write_pair(raw, REVIEWS_2014, META_2014, names=("reviews_Other.json.gz", "meta_Other.json.gz"))
    with pytest.raises(DataFormatError, match="cannot tell the reviews file and the metadata file apart"):
        _ = AmazonReviewsSource(raw_dir=str(raw), reviews_file=None, meta_file=None).reviews_path


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$25.00", 25.0),
        ("$1,299.99", 1299.99),
        (12.5, 12.5),
        ("", None),
        ("$10.00 - $20.00", None),
        (".a-box-inner", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_price(value, expected):
    assert parse_price(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1,786 in Gift Cards (", 1786),
        ([">#2,893,775 in Toys & Games (See Top 100)", ">#1,019 in Kids"], 2893775),
        ({"Books": 12}, 12),
        ([], None),
        ("", None),
    ],
)
def test_parse_rank(value, expected):
    assert parse_rank(value) == expected


# ------------------------------------------------------------------ the real 2018 files
AMAZON2018 = SHARED_DATA / "amazon2018"


def independent_counts(folder: Path, filters: InteractionFilters) -> dict[str, int]:
    """The files counted with the json module alone, under the same filter rules."""
    reviews_file = next(p for p in folder.glob("*.json.gz") if not p.name.startswith("meta_"))
    meta_file = next(folder.glob("meta_*.json.gz"))
    records, malformed, kept = 0, 0, {}
    min_ms = None if filters.min_timestamp is None else 1_420_070_400_000  # 2015-01-01
    with gzip.open(reviews_file, "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    for line in lines:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            malformed += 1
            continue
        if not all(k in r for k in ("reviewerID", "asin", "overall", "unixReviewTime")):
            malformed += 1
            continue
        records += 1
        ok = (min_ms is None or r["unixReviewTime"] * 1000 >= min_ms) and r["overall"] >= filters.min_rating
        ok = ok and (not filters.require_verified or r.get("verified", False))
        if ok:
            kept.setdefault((r["reviewerID"], r["asin"]), r["asin"])
    meta_lines, asins = 0, []
    with gzip.open(meta_file, "rt", encoding="utf-8") as fh:
        meta = fh.readlines()
    for line in meta:
        meta_lines += 1
        asins.append(json.loads(line)["asin"])
    interacted = set(kept.values())
    return {
        "reviews_records_read": records,
        "reviews_malformed_lines": malformed,
        "meta_records_read": meta_lines,
        "meta_duplicate_items": meta_lines - len(set(asins)),
        "interacted_items_with_metadata": len(interacted & set(asins)),
        "interacted_items_without_metadata": len(interacted - set(asins)),
    }


@pytest.mark.parametrize("fmt", ["2018", "auto"])
@pytest.mark.parametrize("folder", ["gift_cards", "magazine_subscriptions"])
def test_real_2018_files_prepare_to_independent_counts(tmp_path, folder, fmt):
    raw = AMAZON2018 / folder
    if not raw.is_dir():
        pytest.skip(f"Amazon 2018 files not found at {raw}")
    cfg = compose_config(
        "prepare",
        [
            "data=amazon",
            f"data.raw_dir={raw}",
            f"data.format={fmt}",
            "data.preparer.filters.kcore=0",
            f"data.processed_dir={tmp_path / 'out'}",
            "text_encoder=hashing",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
    )
    preparer = hydra.utils.instantiate(cfg.data.preparer)
    dataset = preparer.run()
    stats = dataset.manifest["filter_stats"]
    expected = independent_counts(raw, preparer.filters)
    assert {k: stats[k] for k in expected} == expected
    assert dataset.manifest["source_info"]["format"] == "2018"
    known = {"gift_cards": (2972, 0, 148), "magazine_subscriptions": (2375, 1065, None)}[folder]
    assert (stats["reviews_records_read"], stats["meta_duplicate_items"]) == known[:2]  # SOURCE.md's counts
    if known[2] is not None:
        assert stats["interacted_items_without_metadata"] == 0
