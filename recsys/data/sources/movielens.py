"""MovieLens in its original formats: ML-100K (u.data/u.item), ML-1M (.dat), ml-latest (.csv)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.cleaning import map_categories, sanitize_text
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.text import unified_text

_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El|Los|Las)$")
_LAYOUTS = {  # format -> (ratings file, movies file)
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}

_USER_FILES = {  # layout -> (file, separator, fields in file order)
    "ml-100k": ("u.user", "|", ("user_id", "age", "gender", "occupation", "zip")),
    "ml-1m": ("users.dat", "::", ("user_id", "gender", "age", "occupation", "zip")),
}


def split_title(raw: str) -> tuple[str, str]:
    """'Shawshank Redemption, The (1994)' -> ('The Shawshank Redemption', '1994')."""
    raw = sanitize_text(raw)
    match = _TITLE_YEAR.match(raw)
    title, year = (match.group(1), match.group(2)) if match else (raw, "")
    article = _TRAILING_ARTICLE.match(title)
    if article:
        title = f"{article.group(2)} {article.group(1)}".replace("L' ", "L'")
    return title, year


def _count_data_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


@dataclass
class MovieLensSource:
    raw_dir: str
    name: str = "movielens"
    stats: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def layout(self) -> str:
        root = Path(self.raw_dir)
        for layout, (ratings, movies) in _LAYOUTS.items():
            if (root / ratings).is_file() and (root / movies).is_file():
                return layout
        expected = "; ".join(f"{r} + {m}" for r, m in _LAYOUTS.values())
        raise DataFormatError(f"{root}: no MovieLens files found (expected one of: {expected})")

    def _read_ratings(self, path: Path, layout: str) -> pd.DataFrame:
        if layout == "ml-100k":
            raw = pd.read_csv(path, sep="\t", header=None, dtype=str, usecols=range(4), on_bad_lines="skip")
        elif layout == "ml-1m":  # "u::i::r::t": splitting on ':' leaves empty columns between fields
            raw = pd.read_csv(path, sep=":", header=None, dtype=str, usecols=[0, 2, 4, 6])
        else:
            raw = pd.read_csv(path, dtype=str, usecols=["userId", "movieId", "rating", "timestamp"])
        raw.columns = ["user_id", "item_id", "rating", "timestamp"]
        skipped = _count_data_lines(path) - (layout == "ml-latest") - len(raw)  # rows the parser skipped
        rating = pd.to_numeric(raw["rating"], errors="coerce")
        seconds = pd.to_numeric(raw["timestamp"], errors="coerce")
        ok = raw["user_id"].notna() & raw["item_id"].notna() & rating.notna() & seconds.notna()
        self.stats["ratings_records_read"] = int(ok.sum())
        self.stats["ratings_malformed_lines"] = int((~ok).sum()) + skipped
        if not ok.any():
            raise DataFormatError(f"{path}: no valid rating rows (user, item, rating, timestamp)")
        return pd.DataFrame(
            {
                "user_id": raw.loc[ok, "user_id"].str.strip(),
                "item_id": raw.loc[ok, "item_id"].str.strip(),
                "rating": rating[ok].to_numpy(dtype=np.float64),
                "timestamp": seconds[ok].to_numpy(dtype=np.int64) * 1000,
                "verified": np.ones(int(ok.sum()), dtype=bool),
            }
        )

    def iter_interactions(self) -> Iterator[pd.DataFrame]:
        layout = self.layout
        yield self._read_ratings(Path(self.raw_dir) / _LAYOUTS[layout][0], layout)

    def _read_movies(self, path: Path, layout: str) -> pd.DataFrame:
        if layout == "ml-100k":
            genre_path = path.with_name("u.genre")
            names = (
                pd.read_csv(genre_path, sep="|", header=None, encoding="latin-1")[0].tolist()
                if genre_path.is_file()
                else [f"genre_{i}" for i in range(19)]
            )
            raw = pd.read_csv(path, sep="|", header=None, encoding="latin-1", dtype=str)
            flags = raw.iloc[:, 5 : 5 + len(names)].astype(int).to_numpy(dtype=bool)
            genres = [[names[j] for j in np.flatnonzero(row)] for row in flags]
            return pd.DataFrame(
                {"item_id": raw[0].str.strip(), "raw_title": raw[1].fillna(""), "genres": genres}
            )
        if layout == "ml-1m":
            lines = path.read_text(encoding="latin-1").splitlines()
            parts = [line.split("::", 2) for line in lines if line.strip()]
            bad = sum(len(p) != 3 for p in parts)
            self.stats["movies_malformed_lines"] = bad
            parts = [p for p in parts if len(p) == 3]
            return pd.DataFrame(
                {
                    "item_id": [p[0].strip() for p in parts],
                    "raw_title": [p[1] for p in parts],
                    "genres": [p[2].split("|") for p in parts],
                }
            )
        raw = pd.read_csv(path, dtype=str)
        return pd.DataFrame(
            {
                "item_id": raw["movieId"].str.strip(),
                "raw_title": raw["title"].fillna(""),
                "genres": raw["genres"].fillna("").str.split("|"),
            }
        )

    def read_item_attributes(self) -> pd.DataFrame:
        """``item_id``, ``year`` (the title's release year; None where the title has none)."""
        movies = self._movies()
        years = [split_title(raw)[1] or None for raw in movies["raw_title"]]
        return pd.DataFrame({"item_id": movies["item_id"].to_numpy(), "year": years})

    def read_user_attributes(self) -> pd.DataFrame:
        """``user_id``, ``age``, ``gender``, ``occupation``, ``zip`` (ML-100K's u.user, ML-1M's
        users.dat: ML-1M's age is its bracket's lower bound and its occupation a code)."""
        layout = self.layout
        if layout not in _USER_FILES:
            raise DataFormatError(f"{self.raw_dir}: {layout} has no user file; declare no user attributes")
        name, sep, order = _USER_FILES[layout]
        path = Path(self.raw_dir) / name
        if not path.is_file():
            raise DataFormatError(f"{path}: file not found (the user attributes of {layout})")
        lines = [line for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]
        parts = [line.split(sep) for line in lines]
        ok = [p for p in parts if len(p) == len(order)]
        self.stats["users_malformed_lines"] = len(parts) - len(ok)
        frame = pd.DataFrame([[v.strip() for v in p] for p in ok], columns=list(order), dtype=object)
        return frame[["user_id", "age", "gender", "occupation", "zip"]]

    def _movies(self) -> pd.DataFrame:
        """The movies file's rows, the first of each repeated id."""
        layout = self.layout
        return self._read_movies(Path(self.raw_dir) / _LAYOUTS[layout][1], layout).drop_duplicates("item_id")

    def read_items(self) -> pd.DataFrame:
        movies = self._movies()
        titles, texts, categories = [], [], []
        for raw_title, raw_genres in zip(movies["raw_title"], movies["genres"], strict=True):
            title, year = split_title(raw_title)
            genres = map_categories(raw_genres)
            titles.append(title)
            categories.append(genres)
            texts.append(unified_text(title, genres, {"Year": year} if year else {}, ""))
        self.stats["movies_records_read"] = len(movies)
        return pd.DataFrame(
            {
                "item_id": movies["item_id"].to_numpy(),
                "title": titles,
                "text": texts,
                "categories": categories,
            }
        )
