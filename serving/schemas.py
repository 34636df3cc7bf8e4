"""Request and response bodies of the HTTP API (the OpenAPI schema at /docs comes from here)."""
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from ratingctr.serving.safe_text import check_text
from ratingctr.serving.settings import GatewaySettings


def _id_string(value: object) -> object:
    """Ids may arrive as JSON strings or integers (MovieLens ids are numbers); never bools/floats."""
    if isinstance(value, bool):
        raise ValueError("must be a string or an integer id, not a boolean")
    if isinstance(value, int):
        return str(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one app, their limits taken from its settings.

    Why built per app rather than at import: the limits are settings (``RATINGCTR_MAX_*``),
    and the OpenAPI schema must show the limits actually enforced (``maxLength``, bounds),
    so that a contract fuzzer and a client see the real contract.
    """

    recommend: type[BaseModel]
    score: type[BaseModel]
    events: type[BaseModel]
    reload: type[BaseModel]


def request_models(settings: GatewaySettings) -> RequestModels:
    s = settings
    # Checked in this order: type, length (so the scan below never sees a long string), then
    # printable Unicode without lone surrogates or control characters.
    Id = Annotated[str, BeforeValidator(_id_string), Field(min_length=1, max_length=s.max_id_chars),
                   AfterValidator(check_text)]
    Name = Annotated[str, Field(min_length=1, max_length=s.max_model_chars), AfterValidator(check_text)]
    FieldName = Annotated[str, Field(min_length=1, max_length=s.max_id_chars), AfterValidator(check_text)]
    FieldValue = Id | Annotated[list[Id], Field(max_length=s.max_user_fields)]
    UserFields = Annotated[dict[FieldName, FieldValue] | None, Field(
        None, max_length=s.max_user_fields,
        description="profile fields for users the model does not know (cold start), e.g. {\"gender\": \"F\"}")]
    Model = Annotated[Name | None, Field(None, description="bundle name; default: the first bundle loaded")]

    class RecommendRequest(_Strict):
        user_id: Id
        k: int = Field(min(10, s.max_k), ge=1, le=s.max_k,
                       description="items to return (fewer only if candidates run out); at most RATINGCTR_MAX_K")
        exclude_seen: StrictBool = True
        model: Model
        user_fields: UserFields

    class ScoreRequest(_Strict):
        user_id: Id
        item_ids: list[Id] = Field(..., min_length=1, max_length=s.max_item_ids)
        model: Model
        user_fields: UserFields

    class Event(_Strict):
        user_id: Id
        item_id: Id
        rating: float = Field(..., ge=1, allow_inf_nan=False,
                              description="a rating on the model's scale 1..levels (422 above the largest scale)")
        ts: float | None = Field(None, ge=0, le=1e10, allow_inf_nan=False,
                                 description="unix seconds; default: time received")
        event_id: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(check_text)] | None = Field(
            None, description="optional client id of the event: a retry with the same id (within "
                              "RATINGCTR_EVENT_ID_TTL_S) is stored once")

    class EventsRequest(_Strict):
        events: list[Event] = Field(..., min_length=1, max_length=s.max_events)

    class ReloadRequest(_Strict):
        name: Name
        path: Annotated[str, Field(min_length=1, max_length=s.max_path_chars), AfterValidator(check_text)]

    return RequestModels(RecommendRequest, ScoreRequest, EventsRequest, ReloadRequest)


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
