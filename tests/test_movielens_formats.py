"""The MovieLens reader on ML-1M (.dat, '::') and ml-latest (.csv) layouts, written here in miniature."""

from __future__ import annotations

import pytest

from recsys.data.sources.jsonl import DataFormatError
from recsys.data.sources.movielens import MovieLensSource, split_title


def test_ml1m_layout(tmp_path):
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\nbad line\n"
    )
    (tmp_path / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Am\xe9lie (2001)::Comedy|Romance\n".encode(
            "latin-1"
        )
    )
    src = MovieLensSource(str(tmp_path))
    assert src.layout == "ml-1m"
    ratings = next(src.iter_interactions())
    assert ratings["item_id"].tolist() == ["10", "20", "10"]
    assert ratings["timestamp"].tolist() == [978300760000, 978302109000, 978301968000]
    assert src.stats["ratings_malformed_lines"] == 1
    items = src.read_items().set_index("item_id")
    assert items.loc["20", "title"] == "Amélie"
    assert list(items.loc["10", "categories"]) == ["Animation", "Comedy", "Kids"]


def test_ml_latest_layout(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Heat (1995),(no genres listed)\n"
    )
    src = MovieLensSource(str(tmp_path))
    assert src.layout == "ml-latest"
    assert next(src.iter_interactions())["rating"].tolist() == [4.0, 4.5]
    items = src.read_items().set_index("item_id")
    assert items.loc["1", "title"] == "The American President"
    assert (
        items.loc["1", "text"]
        == "Title: The American President [SEP] Genre: Comedy, Drama, Romance [SEP] Details: Year: 1995"
    )
    assert list(items.loc["3", "categories"]) == []


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataFormatError, match="no MovieLens files found"):
        next(MovieLensSource(str(tmp_path)).iter_interactions())


def test_split_title():
    assert split_title("City of Lost Children, The (1995)") == ("The City of Lost Children", "1995")
    assert split_title("Heat") == ("Heat", "")
