"""The unified item text that the sentence encoder reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SEP = " [SEP] "


def unified_text(title: str, genres: Sequence[str], details: Mapping[str, str], description: str) -> str:
    """``Title: … [SEP] Genre: … [SEP] Details: … [SEP] Description: …`` with empty parts omitted."""
    parts = []
    if title:
        parts.append(f"Title: {title}")
    if genres:
        parts.append("Genre: " + ", ".join(genres))
    detail_text = "; ".join(f"{key}: {value}" for key, value in details.items() if value)
    if detail_text:
        parts.append(f"Details: {detail_text}")
    if description:
        parts.append(f"Description: {description}")
    return SEP.join(parts)
