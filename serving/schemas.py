"""Request and response bodies of the HTTP API (the OpenAPI schema at /docs comes from here)."""
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from ratingctr.serving.safe_text import check_text
from ratingctr.serving.settings import GatewaySettings


def _text(max_chars: int, ids: bool = False) -> BeforeValidator:
    """Refuse lone surrogates and control characters with a clear message, before pydantic's own
    string handling (which reports a surrogate only as "unable to parse raw data").

    ``ids``: ids may arrive as JSON integers (MovieLens ids are numbers), never as bools or
    floats.  Over-long text is left to the length constraint, so it is never scanned.
    """
    def check(value: object) -> object:
        if ids and isinstance(value, bool):
            raise ValueError("must be a string or an integer id, not a boolean")
        if ids and isinstance(value, int):
            value = str(value)
        if isinstance(value, str) and len(value) <= max_chars:
            check_text(value)
        return value
    return BeforeValidator(check)


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
    # Text is printable Unicode without lone surrogates or control characters (checked first,
    # for a clear message; over-long text is not scanned), then typed and length-checked.
    Id = Annotated[str, Field(min_length=1, max_length=s.max_id_chars), _text(s.max_id_chars, ids=True)]
    Name = Annotated[str, Field(min_length=1, max_length=s.max_model_chars), _text(s.max_model_chars)]
    FieldName = Annotated[str, Field(min_length=1, max_length=s.max_id_chars), _text(s.max_id_chars)]
    FieldValue = Id | Annotated[list[Id], Field(max_length=s.max_user_fields)]
    UserFields = Annotated[dict[FieldName, FieldValue] | None, Field(
        None, max_length=s.max_user_fields,
        description="profile fields for users the model does not know (cold start), e.g. {\"gender\": \"F\"}")]
    # An event's side fields: the same bounds as ``user_fields`` (at most RATINGCTR_MAX_USER_FIELDS
    # entries, names and tokens RATINGCTR_MAX_ID_CHARS of safe text), so a stream entry stays bounded.
    EventUserFields = Annotated[dict[FieldName, FieldValue] | None, Field(
        None, max_length=s.max_user_fields,
        description="the user's side fields as of this event (field -> token or list of tokens), e.g. "
                    "{\"age\": \"25\", \"gender\": \"F\"}; stored with the event, the latest per user wins")]
    EventItemFields = Annotated[dict[FieldName, FieldValue] | None, Field(
        None, max_length=s.max_user_fields,
        description="the item's side fields as of this event, e.g. {\"genre\": [\"Comedy\", \"Drama\"]}; "
                    "stored with the event, the latest per item wins")]
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
        event_id: Annotated[str, Field(min_length=1, max_length=128), _text(128)] | None = Field(
            None, description="optional client id of the event: a retry with the same id (within "
                              "RATINGCTR_EVENT_ID_TTL_S) is stored once")
        user_fields: EventUserFields
        item_fields: EventItemFields

    class EventsRequest(_Strict):
        events: list[Event] = Field(..., min_length=1, max_length=s.max_events)

    class ReloadRequest(_Strict):
        name: Name
        path: Annotated[str, Field(min_length=1, max_length=s.max_path_chars), _text(s.max_path_chars)]
        # "promotion": sent by `ratingctr promote` after its gate passed, counted apart
        reason: Literal["manual", "promotion"] = "manual"

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
    # the last items, placed by the bundle's fresh-item slot rather than the served order
    # (bundle.RankingInfo: items the model first saw in its newest retrain)
    fresh_item_ids: list[str] = []


class ScoreResponse(RecommendResponse):
    unknown_item_ids: list[str]


class EventsResponse(BaseModel):
    accepted: int
    ids: list[str]


class ErrorResponse(BaseModel):
    error: str
