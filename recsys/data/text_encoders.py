"""Rebuild the text encoder a dataset was embedded with, from the type and key its manifest records."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.data.static_text import StaticTextEncoder
from recsys.data.text_embeddings import HashingTextEncoder, SentenceTransformerEncoder, TextEncoder


def encoder_from_key(type_name: str, key: str, static_dir: str | Path | None = None) -> TextEncoder:
    """E.g. to embed new items at serving time exactly as the catalog was embedded. A static
    encoder reads its table from ``static_dir`` (a bundle's copy) when given."""
    params = json.loads(key)
    if type_name == "HashingTextEncoder":
        return HashingTextEncoder(dim=params["dim"], ngram_max=params["ngram_max"])
    if type_name == "SentenceTransformerEncoder":
        return SentenceTransformerEncoder(
            model=params["model"], precision=params["precision"], max_seq_length=params["max_seq_length"]
        )
    if type_name == "StaticTextEncoder":  # without static_dir or a cache the table is distilled again
        return StaticTextEncoder(
            teacher=params["static"],
            dim=params["dim"],
            sif_coefficient=params["sif"],
            cache_dir=None if static_dir is None else str(static_dir),
        )
    raise ValueError(f"unknown text encoder type {type_name!r}")
