"""HTTP glue: FastAPI routes, error bodies, the request-edge middlewares.  Behaviour lives in gateway.py.

Run with ``ratingctr serve`` (recommended) or ``uvicorn --factory serving.app:create_app``; the
latter with ``--workers N`` needs ``REDIS_URL`` (a second embedded Redis on one directory is refused).
No ``from __future__ import annotations`` here: the request models are built per app
(their limits are settings), and FastAPI resolves route annotations from module globals.
"""
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ratingctr.serving import metrics
from ratingctr.serving.auth import CallerGuard, document_security
from ratingctr.serving.body_deadline import BodyDeadline
from ratingctr.serving.gateway import ApiError, Gateway
from ratingctr.serving.responses import FastJSONResponse, send_json_error
from ratingctr.serving.safe_text import excerpt, safe_message
from ratingctr.serving.schemas import (
    ErrorResponse,
    EventsResponse,
    RecommendResponse,
    ScoreResponse,
    request_models,
)
from ratingctr.serving.settings import GatewaySettings

log = logging.getLogger("ratingctr.app")

_ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
           408: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
           503: {"model": ErrorResponse}}


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by header or while streaming (chunked)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _too_large(self.limit, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # an HTTPException passes through FastAPI's body parsing as is
                    raise HTTPException(413, f"request body exceeds {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


async def _too_large(limit: int, send) -> None:
    await send_json_error(send, 413, f"request body exceeds {limit} bytes")


def _validation_message(exc: RequestValidationError) -> str:
    """What was wrong and where, quoting client input only as short escaped excerpts.

    Locations can hold client text (an unknown key, a ``user_fields`` key), which may be
    megabytes long or hold lone surrogates; pydantic's messages themselves never quote input.
    """
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(excerpt(p) if isinstance(p, str) else str(p)
                         for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _configure_logging() -> None:
    """Our loggers print next to uvicorn's; uvicorn configures only its own."""
    logger = logging.getLogger("ratingctr")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    _configure_logging()
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gateway.start()
        yield
        await gateway.stop()

    app = FastAPI(title="ratingctr gateway", version="1", lifespan=lifespan,
                  description="Top-K recommendations ranked by the rating-aware click probability p̂.")
    app.state.gateway = gateway
    models = request_models(settings)
    RecommendRequest, ScoreRequest, EventsRequest, ReloadRequest = (  # noqa: N806 - classes
        models.recommend, models.score, models.events, models.reload)

    def error(status: int, message: str, endpoint: str, headers: dict[str, str] | None = None) -> FastJSONResponse:
        metrics.ERRORS.labels(endpoint, str(status)).inc()
        return FastJSONResponse({"error": safe_message(message)}, status_code=status, headers=headers)

    def endpoint_of(request: Request) -> str:
        return metrics.endpoint_label(request.scope)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message, endpoint_of(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc), endpoint_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), endpoint_of(request), exc.headers)  # 405 keeps Allow

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # never a stack trace to a client
        log.exception("unhandled error on %s", excerpt(request.url.path, 200))
        return error(500, "internal error; the gateway logged the details", endpoint_of(request))

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=_ERRORS)
    async def recommend(body: RecommendRequest):
        return FastJSONResponse(await gateway.recommend(body.user_id, body.k, body.exclude_seen, body.model,
                                                        body.user_fields))

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS)
    async def score(body: ScoreRequest):
        return FastJSONResponse(await gateway.score(body.user_id, body.item_ids, body.model, body.user_fields))

    @app.post("/v1/events", status_code=202, response_model=EventsResponse, responses=_ERRORS)
    async def events(body: EventsRequest):
        result = await gateway.events([e.model_dump() for e in body.events])
        return FastJSONResponse(result, status_code=202)

    @app.post("/v1/admin/reload", responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, **_ERRORS})
    async def reload(body: ReloadRequest):  # the caller was checked by CallerGuard, before the body
        return FastJSONResponse(await gateway.reload(body.name, body.path, reason=body.reason))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        state = await gateway.readiness()
        return FastJSONResponse(state, status_code=200 if state["status"] == "ready" else 503)

    @app.get("/metrics", response_class=PlainTextResponse)  # the OpenAPI schema says text/plain
    async def prometheus():
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    # Outermost last: the caller is judged first, then the body's size and its arrival time.
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_s)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CallerGuard, api_keys=settings.api_key_list(), admin_token=settings.admin_token)
    document_security(app, client_keys=bool(settings.api_key_list()))
    return app
