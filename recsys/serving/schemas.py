"""The HTTP API's request and response schemas (what /openapi.json documents)."""

from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

MAX_ID_LENGTH = 256
MAX_POSTED_HISTORY = 10_000
MAX_TEXT_LENGTH = 20_000


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(
        description="the ranker's score (the retrieval inner product without a ranker; the popularity "
        "score for `popular`); items come in `rank` order, which under a bundle's "
        "`cold_candidates=keep` leaves cold items at their retrieval position, so scores need not decrease"
    )
    rank: int


class UserRecommendations(BaseModel):
    user_id: str
    strategy: Literal["two_stage", "popular"]
    items: list[RecommendedItem]


class HistoryRecommendations(BaseModel):
    strategy: Literal["two_stage", "popular"]
    items: list[RecommendedItem]
    unknown_items: list[str] = Field(description="posted item ids not in the catalog (ignored)")


class HistoryItem(BaseModel):
    item_id: str
    title: str
    timestamp: int | None


class UserHistory(BaseModel):
    user_id: str
    items: list[HistoryItem]


class ItemInfo(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    popularity: int
    is_warm: bool


class NewItem(BaseModel):
    """An item to add: embedded from its text through the item tower's cold path."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    title: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH)
    text: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        description="the text the item tower reads, as the catalog's items have it (e.g. `Title: … [SEP] "
        "Genre: … [SEP] Details: … [SEP] Description: …`); default: built from title and categories",
    )
    categories: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] = Field(
        default_factory=list, max_length=100
    )


class ItemChange(BaseModel):
    item_id: str
    change: Literal["added", "deleted"]
    seq: int = Field(description="the change's number in the bundle's catalog change log")


class Health(BaseModel):
    status: Literal["ok"]
    n_items: int
    n_users: int
    bundle: dict[str, Any]


class Detail(BaseModel):
    """Every error's body."""

    detail: str | list[Any]


class Loading(BaseModel):
    """/health while no inference worker is ready."""

    status: Literal["loading"]


ID = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)]
