"""Who may call what: client API keys and the admin token, checked before anything else.

Why an ASGI middleware and not a FastAPI dependency: FastAPI parses and validates the body
before (or alongside) dependencies, so an anonymous caller would learn from a 422 what the
body should look like, and a malformed body would cost parsing work before the caller is
known.  Here the caller is judged on the headers alone; the body is never read for a
refused request.  Keys are compared with ``hmac.compare_digest`` against every configured
key (no early exit), so the time taken does not reveal how much of a key was right.
"""
from __future__ import annotations

import hmac

from ratingctr.serving import metrics
from ratingctr.serving.responses import send_json_error

CLIENT_PATHS = frozenset({"/v1/recommend", "/v1/score", "/v1/events"})
ADMIN_PREFIX = "/v1/admin/"
_CHALLENGE = ((b"www-authenticate", b"Bearer"),)


def _headers(scope: dict) -> tuple[bytes, bytes]:
    """(Authorization value, X-API-Key value) of a request, empty when absent."""
    authorization = api_key = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"x-api-key":
            api_key = value
    return authorization, api_key


def _bearer(authorization: bytes) -> bytes:
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


def _matches(given: bytes, keys: list[bytes]) -> bool:
    found = False
    for key in keys:  # every key is compared, whichever matches
        found |= hmac.compare_digest(given, key)
    return found and bool(given)


class CallerGuard:
    """401/403 for client and admin paths before the app reads the request."""

    def __init__(self, app, api_keys: list[str], admin_token: str | None) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.admin_token = admin_token.encode() if admin_token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            refusal = self._admin_refusal(scope)
            label = "admin"
        elif self.api_keys and path in CLIENT_PATHS:
            refusal = self._client_refusal(scope)
            label = path.rsplit("/", 1)[-1]
        else:
            refusal = None
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        metrics.ERRORS.labels(label, str(status)).inc()
        await send_json_error(send, status, message, _CHALLENGE if status == 401 else ())

    def _client_refusal(self, scope: dict) -> tuple[int, str] | None:
        authorization, api_key = _headers(scope)
        given = api_key or _bearer(authorization)
        if not given:
            return 401, "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        if not _matches(given, self.api_keys):
            return 401, "wrong API key"
        return None

    def _admin_refusal(self, scope: dict) -> tuple[int, str] | None:
        if self.admin_token is None:
            return 403, "admin endpoints are disabled: set RATINGCTR_ADMIN_TOKEN"
        given = _bearer(_headers(scope)[0])
        if not _matches(given, [self.admin_token]):
            return 401, "missing or wrong bearer token"
        return None


def document_security(app, client_keys: bool) -> None:
    """Declare in the OpenAPI schema what CallerGuard enforces, so clients and contract
    fuzzers see which endpoints need which credential."""
    build = app.openapi

    def openapi() -> dict:
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["AdminToken"] = {"type": "http", "scheme": "bearer", "description": "RATINGCTR_ADMIN_TOKEN"}
        if client_keys:
            schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                 "description": "one of RATINGCTR_API_KEYS"}
            schemes["ApiKeyBearer"] = {"type": "http", "scheme": "bearer", "description": "one of RATINGCTR_API_KEYS"}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path.startswith(ADMIN_PREFIX):
                    operation["security"] = [{"AdminToken": []}]
                elif client_keys and path in CLIENT_PATHS:
                    operation["security"] = [{"ApiKey": []}, {"ApiKeyBearer": []}]
        return schema

    app.openapi = openapi
