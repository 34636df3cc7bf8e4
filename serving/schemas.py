"""Request and response bodies of the HTTP API (the OpenAPI schema at /docs comes from here)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _id_string(value: object) -> object:
    """Ids may arrive as JSON strings or integers (MovieLens ids are numbers); never bools/floats."""
    if isinstance(value, bool):
        raise ValueError("must be a string or an integer id, not a boolean")
    if isinstance(value, int):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id_string), Field(min_length=1, max_length=256)]
FieldValue = str | int | list[str | int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    user_id: Id
    k: int = Field(10, ge=1, le=1000, description="items to return (fewer only if candidates run out)")
    exclude_seen: bool = True
    model: str | None = Field(None, description="bundle name; default: the first bundle loaded")
    user_fields: dict[str, FieldValue] | None = Field(
        None, description="profile fields for users the model does not know (cold start), e.g. {\"gender\": \"F\"}")


class ScoreRequest(_Strict):
    user_id: Id
    item_ids: list[Id] = Field(..., min_length=1, max_length=10_000)
    model: str | None = None
    user_fields: dict[str, FieldValue] | None = None


class Event(_Strict):
    user_id: Id
    item_id: Id
    rating: float = Field(..., description="a rating on the model's scale 1..levels")
    ts: float | None = Field(None, ge=0, description="unix seconds; default: time received")


class EventsRequest(_Strict):
    events: list[Event] = Field(..., min_length=1)


class ReloadRequest(_Strict):
    name: str = Field(..., min_length=1, max_length=128)
    path: str = Field(..., min_length=1)


class ScoredItem(BaseModel):
    item_id: str
    p_click: float
    rating_probs: list[float] | None
    expected_rating: float | None


class ModelInfo(BaseModel):
    name: str
    version: str


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model: ModelInfo
    fallback: Literal["cold_start", "degraded"] | None


class ScoreResponse(RecommendResponse):
    unknown_item_ids: list[str]


class EventsResponse(BaseModel):
    accepted: int
    ids: list[str]


class ErrorResponse(BaseModel):
    error: str
