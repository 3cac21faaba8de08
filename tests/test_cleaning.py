from __future__ import annotations

import pytest

from recsys.data.cleaning import (
    CANONICAL_GENRES,
    clean_categories,
    extract_details,
    map_label,
    sanitize_text,
    truncate_words,
)
from recsys.data.text import unified_text


def test_canonical_genre_count():
    assert 28 <= len(CANONICAL_GENRES) <= 32 and len(set(CANONICAL_GENRES)) == len(CANONICAL_GENRES)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Sci-Fi & Fantasy", ("Fantasy", "Science Fiction")),
        ("Science Fiction", ("Science Fiction",)),
        ("Action & Adventure", ("Action", "Adventure")),
        ("Mystery & Thrillers", ("Mystery", "Thriller")),
        ("Kids & Family", ("Family", "Kids")),
        ("Anime & Manga", ("Anime",)),
        ("Music Videos & Concerts", ("Music",)),
        ("Musicals & Performing Arts", ("Musicals & Performing Arts",)),
        ("Military & War", ("Military & War",)),
        ("Westerns", ("Western",)),
        ("Exercise & Fitness", ("Fitness",)),
        ("French", ("International",)),  # languages -> International
        ("Suspenseful", ("Thriller",)),  # moods
        ("Funny", ("Comedy",)),
        ("Children's", ("Kids",)),  # MovieLens
        ("Film-Noir", ("Crime",)),
        ("Movies & TV", ()),  # store taxonomy
        ("Genre for Featured Categories", ()),
        ("Blu-ray", ()),
        ("Star Wars", ()),
    ],
)
def test_label_map(label, expected):
    assert map_label(label) == expected
    assert all(g in CANONICAL_GENRES for g in expected)


def test_backfill_from_details_genre_only_when_categories_empty():
    assert clean_categories(["Movies & TV"], "Science Fiction/Fantasy, Drama") == [
        "Drama",
        "Fantasy",
        "Science Fiction",
    ]
    assert clean_categories(["Horror"], "Comedy") == ["Horror"]
    assert clean_categories(None, ["Comedy", "Romance"]) == ["Comedy", "Romance"]
    assert clean_categories([], None) == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<p>Am&eacute;lie</p>", "Amélie"),
        ("Amélie", "Amélie"),
        ("Tom &amp; Jerry<br/>Cartoon", "Tom & Jerry Cartoon"),
        ("&lt;b&gt;Bold&lt;/b&gt; text", "Bold text"),
        ("tab\there\x07bell\u200b", "tab here bell"),
        (["line one", None, "line <i>two</i>"], "line one line two"),
        (None, ""),
        ("  Ñandú  東京  ", "Ñandú 東京"),
    ],
)
def test_sanitize_text(raw, clean):
    assert sanitize_text(raw) == clean


def test_truncate_words():
    assert truncate_words("one two three", 100) == "one two three"
    assert truncate_words("one two three", 9) == "one two…"


def test_extract_details():
    details = {
        "Actors": ["A", "B", "C", "D", "E", "F"],
        "Directors": "Jane Doe",
        "Studio": "A24",
        "Format": "Blu-ray",
        "Language": "English",
        "Run time": "1 hour and 40 minutes",
        "Date First Available": "March 3, 1999",
        "Product Dimensions": "ignored",
    }
    assert extract_details(details) == {
        "Director": "Jane Doe",
        "Cast": "A, B, C, D, E",
        "Studio": "A24",
        "Format": "Blu-ray",
        "Language": "English",
        "Run time": "1 hour and 40 minutes",
        "Year": "1999",
    }
    assert extract_details(None) == {} and extract_details({"Year": "n/a"}) == {}


def test_unified_text_omits_empty_parts():
    assert unified_text("T", ["Drama"], {"Year": "1999"}, "D") == (
        "Title: T [SEP] Genre: Drama [SEP] Details: Year: 1999 [SEP] Description: D"
    )
    assert unified_text("T", [], {}, "") == "Title: T"
    assert unified_text("", [], {"Cast": ""}, "desc") == "Description: desc"
