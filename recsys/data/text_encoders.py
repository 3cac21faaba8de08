"""Rebuild the text encoder a dataset was embedded with, from the type and key its manifest records."""

from __future__ import annotations

import json

from recsys.data.static_text import StaticTextEncoder
from recsys.data.text_embeddings import HashingTextEncoder, SentenceTransformerEncoder, TextEncoder


def encoder_from_key(type_name: str, key: str) -> TextEncoder:
    """E.g. to embed new items at serving time exactly as the catalog was embedded."""
    params = json.loads(key)
    if type_name == "HashingTextEncoder":
        return HashingTextEncoder(dim=params["dim"], ngram_max=params["ngram_max"])
    if type_name == "SentenceTransformerEncoder":
        return SentenceTransformerEncoder(
            model=params["model"], precision=params["precision"], max_seq_length=params["max_seq_length"]
        )
    if type_name == "StaticTextEncoder":  # the table is distilled again if this machine has no cache
        return StaticTextEncoder(teacher=params["static"], dim=params["dim"], sif_coefficient=params["sif"])
    raise ValueError(f"unknown text encoder type {type_name!r}")
