"""Synthetic Amazon-2023-format data with learnable structure, generated vectorized.

Structure a model can learn, by design:
- ~30 genres, items carry 1-3 of them and genre-specific title/description/detail words, so
  text embeddings separate genres (and help items never seen in training);
- Zipf popularity inside each genre; a share of catalog items is never reviewed;
- users have favourite genres, stay in the genre of their last item (persistence), and watch
  franchises in order (part k -> part k+1), so a sequence model beats popularity;
- "fresh" releases appear only as a user's final interaction: cold items in val/test;
- noise the Amazon filters must remove: pre-2015 reviews, low ratings, unverified purchases,
  duplicate reviews, malformed and blank lines.
The generator writes JSONL.gz files; ``synthetic.SyntheticAmazonSource`` then ingests them with
the Amazon reader, like real data.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.sources import synthetic_vocab as vocab

_DAY_MS = 86_400_000
_START_MS = int(pd.Timestamp("2013-06-01", tz="UTC").value // 1_000_000)
_END_MS = int(pd.Timestamp("2022-06-01", tz="UTC").value // 1_000_000)
_CHUNK_ROWS = 200_000


@dataclass
class SyntheticConfig:
    n_items: int = 3000
    n_users: int = 2000
    mean_length: float = 30.0
    min_length: int = 10
    max_length: int = 300
    zipf_exponent: float = 0.9
    never_reviewed_fraction: float = 0.1
    fresh_item_fraction: float = 0.02
    p_fresh_final: float = 0.15
    franchise_item_fraction: float = 0.3
    p_franchise_next: float = 0.5
    p_genre_stay: float = 0.6
    p_favourite_genre: float = 0.8
    p_low_rating: float = 0.06
    p_unverified: float = 0.04
    p_duplicate: float = 0.01
    p_store_label_only: float = 0.2
    malformed_rate: float = 0.0005
    review_text_words: int = 4
    seed: int = 42


@dataclass
class SyntheticCatalog:
    item_ids: np.ndarray
    genres: np.ndarray  # [n, 3] synthetic genre ids, -1 = none; column 0 is primary
    weights: np.ndarray  # sampling weight in the regular pool
    fresh: np.ndarray  # bool: only sampled as a final interaction
    next_part: np.ndarray  # next item of the franchise, -1 if none


def _pick(rng: np.random.Generator, pool: list | tuple, size) -> np.ndarray:
    return np.asarray(pool, dtype=object)[rng.integers(0, len(pool), size=size)]


def _genre_words() -> list[list[str]]:
    return [words.split() for _, words in vocab.GENRES]


def build_catalog(cfg: SyntheticConfig, rng: np.random.Generator) -> SyntheticCatalog:
    n, n_genres = cfg.n_items, len(vocab.GENRES)
    genres = np.full((n, 3), -1, dtype=np.int64)
    genres[:, 0] = rng.integers(0, n_genres, n)
    n_extra = rng.choice([0, 1, 2], size=n, p=[0.5, 0.35, 0.15])
    for col in (1, 2):
        other = (genres[:, 0] + rng.integers(1, n_genres, n)) % n_genres
        genres[:, col] = np.where(n_extra >= col, other, -1)
    genres[:, 2] = np.where(genres[:, 2] == genres[:, 1], -1, genres[:, 2])

    weights = (rng.permutation(n) + 1.0) ** -cfg.zipf_exponent
    status = rng.random(n)
    never = status < cfg.never_reviewed_fraction
    fresh = (status >= cfg.never_reviewed_fraction) & (
        status < cfg.never_reviewed_fraction + cfg.fresh_item_fraction
    )
    weights[never | fresh] = 0.0

    # Franchises: runs of 2-6 consecutive regular items sharing the primary genre.
    next_part = np.full(n, -1, dtype=np.int64)
    regular = np.flatnonzero(~(never | fresh))
    budget = int(cfg.franchise_item_fraction * len(regular))
    sizes = rng.integers(2, 7, size=max(1, budget // 3))
    sizes = sizes[np.cumsum(sizes) <= budget]
    members = rng.permutation(regular)[: sizes.sum()]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    is_last = np.zeros(len(members), dtype=bool)
    is_last[np.cumsum(sizes) - 1] = True
    next_part[members[~is_last]] = members[1:][~is_last[:-1]]
    first_of_run = np.repeat(members[starts], sizes)
    genres[members] = genres[first_of_run]
    part_index = np.arange(len(members)) - np.repeat(starts, sizes)
    weights[members] = weights[first_of_run] * 0.7**part_index  # sequels are watched less

    ids = np.char.add("B", np.char.zfill(rng.choice(10**9, size=n, replace=False).astype(str), 9))
    return SyntheticCatalog(ids.astype(object), genres, weights, fresh, next_part)


def _genre_sampler(cat: SyntheticCatalog, weights: np.ndarray, n_genres: int):
    """Vectorized weighted choice of an item within a genre: one CDF over all genres."""
    item_of = np.repeat(np.arange(len(weights)), 3)
    genre_of = cat.genres.reshape(-1)
    ok = (genre_of >= 0) & (weights[item_of] > 0)
    item_of, genre_of = item_of[ok], genre_of[ok]
    order = np.argsort(genre_of, kind="stable")
    item_of, genre_of = item_of[order], genre_of[order]
    w = weights[item_of]
    totals = np.bincount(genre_of, weights=w, minlength=n_genres)
    base = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
    cdf = genre_of + (np.cumsum(w) - base[genre_of]) / np.where(totals > 0, totals, 1.0)[genre_of]
    has_items = totals > 0

    def sample(genres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(cdf, genres + rng.random(len(genres)) * (1 - 1e-9), side="right")
        return item_of[np.minimum(pos, len(item_of) - 1)]

    return sample, has_items


def fresh_weights(cat: SyntheticCatalog) -> np.ndarray:
    """Sampling weight of each fresh release among a genre's fresh releases (0 for the others)."""
    return np.where(cat.fresh, (np.arange(len(cat.fresh)) % 7 + 1.0) ** -1.0, 0.0)


def draw_favourites(rng: np.random.Generator, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's three candidate favourite genres and how many of them (1-3) are theirs: the
    first draws of ``generate_interactions``."""
    favourites = np.stack([rng.integers(0, len(vocab.GENRES), n_users) for _ in range(3)], axis=1)
    return favourites, rng.integers(1, 4, n_users)


def generate_interactions(
    cfg: SyntheticConfig, cat: SyntheticCatalog, rng: np.random.Generator
) -> pd.DataFrame:
    n_genres = len(vocab.GENRES)
    U = cfg.n_users
    regular_sample, regular_has = _genre_sampler(cat, cat.weights, n_genres)
    fresh_sample, fresh_has = _genre_sampler(cat, fresh_weights(cat), n_genres)

    favourites, n_fav = draw_favourites(rng, U)
    lengths = np.clip(
        cfg.min_length + rng.geometric(1.0 / max(1.0, cfg.mean_length - cfg.min_length), U) - 1,
        cfg.min_length,
        cfg.max_length,
    )
    clock = rng.integers(_START_MS, _END_MS, U).astype(np.int64)
    genre = favourites[np.arange(U), rng.integers(0, n_fav)]
    last = np.full(U, -1, dtype=np.int64)

    users, items, times = [], [], []
    for t in range(int(lengths.max())):
        active = np.flatnonzero(lengths > t)
        r = rng.random((len(active), 3))
        fav = favourites[active, rng.integers(0, n_fav[active])]
        other = rng.integers(0, n_genres, len(active))
        new_genre = np.where(r[:, 1] < cfg.p_favourite_genre, fav, other)
        g = np.where((r[:, 0] < cfg.p_genre_stay) & (t > 0), genre[active], new_genre)
        g = np.where(regular_has[g], g, fav)
        item = regular_sample(g, rng)
        final = lengths[active] == t + 1
        use_fresh = final & (r[:, 2] < cfg.p_fresh_final) & fresh_has[g]
        if use_fresh.any():
            item[use_fresh] = fresh_sample(g[use_fresh], rng)
        follow = cat.next_part[last[active]]
        sequel = (last[active] >= 0) & (follow >= 0) & (rng.random(len(active)) < cfg.p_franchise_next)
        item = np.where(sequel & ~use_fresh, follow, item)
        clock[active] += (rng.exponential(4.0, len(active)) * _DAY_MS).astype(np.int64) + 60_000
        users.append(active)
        items.append(item)
        times.append(clock[active].copy())
        last[active] = item
        genre[active] = cat.genres[item, 0]

    user = np.concatenate(users)
    item = np.concatenate(items)
    ts = np.concatenate(times)
    liked = (cat.genres[item][:, :, None] == favourites[user][:, None, :]).any(axis=(1, 2))
    rating = np.where(liked, rng.choice([4.0, 5.0], len(user)), rng.choice([3.0, 4.0, 5.0], len(user)))
    rating = np.where(rng.random(len(user)) < cfg.p_low_rating, rng.choice([1.0, 2.0], len(user)), rating)
    verified = rng.random(len(user)) >= cfg.p_unverified

    dup = np.flatnonzero(rng.random(len(user)) < cfg.p_duplicate)  # a later second review of the same item
    user = np.concatenate([user, user[dup]])
    item = np.concatenate([item, item[dup]])
    ts = np.concatenate([ts, ts[dup] + rng.integers(1, 30, len(dup)) * _DAY_MS])
    rating = np.concatenate([rating, rating[dup]])
    verified = np.concatenate([verified, verified[dup]])
    order = rng.permutation(len(user))
    return pd.DataFrame(
        {
            "user": user[order],
            "item": item[order],
            "timestamp": ts[order],
            "rating": rating[order],
            "verified": verified[order],
        }
    )


def _user_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    raw = rng.integers(0, 16, size=(n, 27))
    digits = np.array(list("0123456789ABCDEF"))[raw]
    return np.char.add("A", np.array(["".join(row) for row in digits], dtype=object).astype(str)).astype(
        object
    )


def _write_jsonl_gz(
    path: Path, chunks: Iterator[str], rng: np.random.Generator, malformed_rate: float, corrupt: bool = True
) -> dict:
    """Write JSON-lines text chunks, inserting blank lines (and, if ``corrupt``, truncated records)."""
    counts = {"malformed": 0, "blank": 0}
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
        for text in chunks:
            if malformed_rate > 0:
                lines = text.rstrip("\n").split("\n")
                bad = np.flatnonzero(rng.random(len(lines)) < malformed_rate)
                for i in bad:
                    if corrupt and i % 2:
                        lines[i] = lines[i][: max(1, len(lines[i]) // 2)]  # truncated record
                        counts["malformed"] += 1
                    else:
                        lines[i] = lines[i] + "\n"  # a blank line after the record
                        counts["blank"] += 1
                text = "\n".join(lines) + "\n"
            fh.write(text)
    tmp.replace(path)
    return counts


def _meta_frame(cfg: SyntheticConfig, cat: SyntheticCatalog, rng: np.random.Generator) -> pd.DataFrame:
    n = len(cat.item_ids)
    words = _genre_words()
    labels = np.array([label for label, _ in vocab.GENRES], dtype=object)
    primary = cat.genres[:, 0]
    w_count = np.array([len(w) for w in words])

    def genre_word(g: np.ndarray) -> np.ndarray:
        flat = np.array([w for ws in words for w in ws], dtype=object)
        offsets = np.concatenate([[0], np.cumsum(w_count)[:-1]])
        return flat[offsets[g] + rng.integers(0, 1 << 30, len(g)) % w_count[g]]

    # Titles: franchise members share a base title and get "Part k".
    base = np.char.add(
        np.char.add(_pick(rng, vocab.COMMON_WORDS, n).astype(str), " "),
        genre_word(primary).astype(str),
    )
    base = np.char.title(base).astype(object)
    part = np.zeros(n, dtype=np.int64)
    head = np.arange(n)
    prev = np.full(n, -1)
    has_next = cat.next_part >= 0
    prev[cat.next_part[has_next]] = np.flatnonzero(has_next)
    for _ in range(6):  # propagate franchise heads down the chains (chains are <= 6 long)
        linked = prev >= 0
        head = np.where(linked, head[np.maximum(prev, 0)], head)
    in_chain = (prev >= 0) | has_next
    depth = np.zeros(n, dtype=np.int64)
    cur = prev.copy()
    for _ in range(6):
        depth += cur >= 0
        cur = np.where(cur >= 0, prev[np.maximum(cur, 0)], -1)
    part = np.where(in_chain, depth + 1, 0)
    titles = np.where(in_chain, base[head] + np.char.add(" Part ", part.astype(str)).astype(object), base)

    second = np.where(cat.genres[:, 1] >= 0, cat.genres[:, 1], primary)
    desc_words = np.stack(
        [genre_word(primary) for _ in range(6)]
        + [genre_word(second) for _ in range(3)]
        + [_pick(rng, vocab.COMMON_WORDS, n) for _ in range(3)],
        axis=1,
    )
    html = rng.random(n) < 0.2
    descriptions = [
        [f"<p>A {' '.join(row[:6])} tale &amp; {' '.join(row[6:])}.</p><br/>"]
        if h
        else [f"A {' '.join(row[:6])} tale of {' '.join(row[6:])}."]
        for row, h in zip(desc_words, html, strict=True)
    ]
    director_ix = primary * 7 + rng.integers(0, 7, n)
    names = np.array([f"{f} {last}" for f in vocab.FIRST_NAMES for last in vocab.LAST_NAMES], dtype=object)
    directors = names[director_ix % len(names)]
    cast = names[(primary[:, None] * 13 + rng.integers(0, 40, (n, 3))) % len(names)]
    years = rng.integers(1950, 2023, n)
    store_only = rng.random(n) < cfg.p_store_label_only
    categories, details = [], []
    studios = _pick(rng, vocab.STUDIOS, n)
    formats = _pick(rng, vocab.FORMATS, n)
    languages = _pick(rng, vocab.LANGUAGES, n)
    minutes = rng.integers(70, 180, n)
    for i in range(n):
        genre_labels = [labels[g] for g in cat.genres[i] if g >= 0]
        detail = {
            "Director": directors[i],
            "Actors": ", ".join(cast[i]),
            "Studio": studios[i],
            "Format": formats[i],
            "Language": languages[i],
            "Run time": f"{minutes[i] // 60} hour and {minutes[i] % 60} minutes",
            "Release date": f"June {1 + i % 28}, {years[i]}",
        }
        if store_only[i]:
            categories.append(["Movies & TV", vocab.STORE_LABELS[i % len(vocab.STORE_LABELS)]])
            detail["Genre"] = ", ".join(genre_labels)
        else:
            categories.append(["Movies & TV", "Genre for Featured Categories", *genre_labels])
        details.append(detail)
    return pd.DataFrame(
        {
            "main_category": "Movies & TV",
            "title": titles,
            "average_rating": np.round(rng.uniform(2.5, 5.0, n), 1),
            "rating_number": rng.integers(0, 5000, n),
            "features": [[] for _ in range(n)],
            "description": descriptions,
            "price": np.round(rng.uniform(3, 40, n), 2),
            "images": [[] for _ in range(n)],
            "videos": [[] for _ in range(n)],
            "store": studios,
            "categories": categories,
            "details": details,
            "parent_asin": cat.item_ids,
            "bought_together": None,
        }
    )


def _review_frame(
    cfg: SyntheticConfig,
    inter: pd.DataFrame,
    cat: SyntheticCatalog,
    user_ids: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    n = len(inter)
    text = _pick(rng, vocab.REVIEW_PHRASES, n)
    if cfg.review_text_words > 0:
        filler = np.array(vocab.COMMON_WORDS, dtype=object)
        extra = filler[rng.integers(0, len(filler), (n, cfg.review_text_words))]
        text = text + ". " + pd.Series([" ".join(r) for r in extra]).to_numpy(dtype=object)
    item_ids = cat.item_ids[inter["item"].to_numpy()]
    return pd.DataFrame(
        {
            "rating": inter["rating"].to_numpy(),
            "title": _pick(rng, vocab.REVIEW_PHRASES, n),
            "text": text,
            "images": [[] for _ in range(n)],
            "asin": item_ids,
            "parent_asin": item_ids,
            "user_id": user_ids[inter["user"].to_numpy()],
            "timestamp": inter["timestamp"].to_numpy(),
            "helpful_vote": rng.integers(0, 5, n),
            "verified_purchase": inter["verified"].to_numpy(),
        }
    )


def _frame_chunks(frame: pd.DataFrame) -> Iterator[str]:
    for start in range(0, len(frame), _CHUNK_ROWS):
        yield frame.iloc[start : start + _CHUNK_ROWS].to_json(orient="records", lines=True, force_ascii=False)


def generate(cfg: SyntheticConfig, raw_dir: str | Path, reviews_file: str, meta_file: str) -> dict:
    """Write ``reviews_file`` and ``meta_file`` into ``raw_dir``; return what was written."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    cat = build_catalog(cfg, rng)
    inter = generate_interactions(cfg, cat, rng)
    user_ids = _user_ids(cfg.n_users, rng)
    # Metadata gets blank lines only: a corrupted record would drop its item from the catalog,
    # and the catalog size is part of the reference scale.
    meta_counts = _write_jsonl_gz(
        raw_dir / meta_file, _frame_chunks(_meta_frame(cfg, cat, rng)), rng, cfg.malformed_rate, corrupt=False
    )
    review_counts = _write_jsonl_gz(
        raw_dir / reviews_file,
        _frame_chunks(_review_frame(cfg, inter, cat, user_ids, rng)),
        rng,
        cfg.malformed_rate,
    )
    return {"n_items": cfg.n_items, "n_reviews": len(inter), "meta": meta_counts, "reviews": review_counts}
