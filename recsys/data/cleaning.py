"""Catalog cleaning: raw category labels to canonical genres, HTML-free text, structured details."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

CANONICAL_GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Anime",
    "Classics",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Educational",
    "Faith & Spirituality",
    "Family",
    "Fantasy",
    "Fitness",
    "Holiday",
    "Horror",
    "Independent",
    "International",
    "Kids",
    "LGBTQ",
    "Military & War",
    "Music",
    "Musicals & Performing Arts",
    "Mystery",
    "Romance",
    "Science Fiction",
    "Sports",
    "Thriller",
    "TV Series",
    "Western",
)
_GENRE_ORDER = {g: i for i, g in enumerate(CANONICAL_GENRES)}

# (regex over the lower-cased raw label, canonical genres). Every matching rule contributes, so
# "Sci-Fi & Fantasy" gives both Science Fiction and Fantasy. Labels that match nothing (store
# taxonomy such as "Movies & TV", "Blu-ray", "Boxed Sets") carry no genre and are dropped.
_LANGUAGES = (
    "french|spanish|german|italian|japanese|korean|chinese|mandarin|cantonese|hindi|bollywood|russian|"
    "swedish|danish|norwegian|portuguese|brazilian|arabic|turkish|polish|thai|subtitled|foreign"
)
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"sci[- ]?fi|science[- ]fiction|\bspace\b|cyberpunk", ("Science Fiction",)),
    (r"fantas", ("Fantasy",)),
    (r"superhero", ("Action", "Fantasy")),
    (r"\baction\b|martial arts|exciting|adrenaline", ("Action",)),
    (r"adventure", ("Adventure",)),
    (r"animat|cartoon", ("Animation",)),
    (r"\banime\b|manga", ("Anime",)),
    (r"classic|silent film|golden age", ("Classics",)),
    (r"comed|funny|humou?r|sitcom|stand[- ]up|feel[- ]good|satire|parody", ("Comedy",)),
    (r"crime|noir|gangster|heist|detective", ("Crime",)),
    (r"documentar|biograph|docuseries|true story", ("Documentary",)),
    (r"drama|thought[- ]provoking|emotional|inspiring", ("Drama",)),
    (r"educat|instructional|how[- ]to|learning", ("Educational",)),
    (r"faith|spiritual|christian|religio|inspirational|bible", ("Faith & Spirituality",)),
    (r"family|heartwarming", ("Family",)),
    (r"fitness|yoga|exercise|workout|pilates", ("Fitness",)),
    (r"holiday|christmas|halloween|seasonal|thanksgiving", ("Holiday",)),
    (r"horror|scary|zombie|slasher|supernatural", ("Horror",)),
    (r"independent|\bindie\b|art house|arthouse", ("Independent",)),
    (rf"international|world cinema|{_LANGUAGES}", ("International",)),
    (r"\bkids?\b|child|preschool|toddler", ("Kids",)),
    (r"lgbt|\bgay\b|lesbian|queer", ("LGBTQ",)),
    (r"military|\bwar\b|wwii|world war|combat", ("Military & War",)),
    (r"\bmusic\b|concert|rock|jazz|hip[- ]hop|\bpop\b", ("Music",)),
    (
        r"musicals?\b|performing arts|opera|ballet|dance|theat(?:er|re)|broadway",
        ("Musicals & Performing Arts",),
    ),
    (r"myster|whodunit", ("Mystery",)),
    (r"romanc|romantic|love stor", ("Romance",)),
    (r"sport|football|baseball|basketball|soccer|boxing|wrestling|golf|hockey|olympic", ("Sports",)),
    (r"thriller|suspense|psychological|espionage|\bspy\b|dark", ("Thriller",)),
    (r"\btv\b|television|\bseries\b|miniseries|season", ("TV Series",)),
    (r"western|cowboy", ("Western",)),
)
# Store taxonomy that would otherwise match a rule ("TV" inside "Movies & TV").
_STORE_LABELS = frozenset({"movies & tv", "movies and tv", "movies & tv shows", "movies", "all titles"})
_COMPILED_RULES = tuple((re.compile(pattern), genres) for pattern, genres in _RULES)
_DETAIL_GENRE_SPLIT = re.compile(r"\s*(?:,|/|\||;|&|\band\b)\s*")


@lru_cache(maxsize=65536)
def map_label(label: str) -> tuple[str, ...]:
    """Canonical genres for one raw category label (cached: catalogs repeat few distinct labels)."""
    text = label.lower().strip()
    if text in _STORE_LABELS:
        return ()
    hits = {g for pattern, genres in _COMPILED_RULES if pattern.search(text) for g in genres}
    return tuple(sorted(hits, key=_GENRE_ORDER.__getitem__))


def map_categories(labels: Iterable[str]) -> list[str]:
    hits = {g for label in labels if isinstance(label, str) for g in map_label(label)}
    return sorted(hits, key=_GENRE_ORDER.__getitem__)


def clean_categories(raw_categories: Iterable[str] | None, detail_genre: Any = None) -> list[str]:
    """Canonical genres from the category path, backfilled from ``details['Genre']`` when empty."""
    genres = map_categories(raw_categories or ())
    if genres or not detail_genre:
        return genres
    values = detail_genre if isinstance(detail_genre, list) else [detail_genre]
    pieces = [p for v in values if isinstance(v, str) for p in _DETAIL_GENRE_SPLIT.split(v) if p]
    return map_categories(pieces + [v for v in values if isinstance(v, str)])


_TAG = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACE = re.compile(r"\s+")


def sanitize_text(value: Any) -> str:
    """Strip HTML tags and entities, control characters and extra whitespace; keep all letters."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value if v is not None)
    text = str(value)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
        if "<" in text:  # entities that encoded tags (&lt;br&gt;)
            text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def truncate_words(text: str, max_chars: int) -> str:
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > 0 else max_chars].rstrip() + "…"


# Output field -> raw ``details`` keys (lower-cased) that feed it, in priority order.
DETAIL_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Director", ("director", "directors", "directed by")),
    ("Cast", ("actors", "starring", "cast", "actor")),
    ("Studio", ("studio", "publisher", "manufacturer")),
    ("Format", ("format", "media format")),
    ("Language", ("language", "languages")),
    ("Run time", ("run time", "runtime", "running time")),
)
_YEAR_KEYS = (
    "release date",
    "original release date",
    "theatrical release date",
    "date first available",
    "year",
)
_YEAR = re.compile(r"\b(18[89]\d|19\d\d|20\d\d)\b")
MAX_CAST = 5


def _detail_value(value: Any, limit: int | None = None) -> str:
    if isinstance(value, list):
        items = [sanitize_text(v) for v in value]
        items = [v for v in items if v]
        return ", ".join(items[:limit] if limit else items)
    if isinstance(value, dict):
        return ""
    text = sanitize_text(value)
    if limit and "," in text:
        text = ", ".join(p.strip() for p in text.split(",")[:limit])
    return text


def extract_details(details: Mapping[str, Any] | None) -> dict[str, str]:
    """Cast, director, studio, format, language, run time and year from a raw ``details`` dict."""
    if not isinstance(details, Mapping) or not details:
        return {}
    lowered = {str(k).strip().lower(): v for k, v in details.items()}
    out: dict[str, str] = {}
    for field, keys in DETAIL_FIELDS:
        for key in keys:
            if key in lowered:
                value = _detail_value(lowered[key], MAX_CAST if field == "Cast" else None)
                if value:
                    out[field] = value
                    break
    for key in _YEAR_KEYS:
        match = _YEAR.search(str(lowered.get(key, "")))
        if match:
            out["Year"] = match.group(1)
            break
    return out


def detail_genre(details: Mapping[str, Any] | None) -> Any:
    if not isinstance(details, Mapping):
        return None
    for key, value in details.items():
        if str(key).strip().lower() in ("genre", "genres"):
            return value
    return None
