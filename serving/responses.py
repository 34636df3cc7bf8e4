"""The gateway's JSON response: orjson, with float32 model outputs written as float32.

Why not Starlette's ``JSONResponse``: stdlib ``json`` writes every float32 score as its
float64 expansion (``0.6369616985321045``) and is several times slower; a rating-head response
carries six numbers per item, so encoding was a visible part of its extra serving cost.
orjson serialises numpy arrays and scalars directly and prints float32 values by their
shortest float32 round-trip form, which parses back to exactly the value ONNX produced.
"""
from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(content: Any) -> bytes:
    """JSON bytes for ``content``; numpy arrays and scalars are written natively.

    orjson would write NaN/inf as null; the ranker refuses non-finite scores before they
    get here (``Ranker.score``), so no number is silently nulled.
    """
    return orjson.dumps(content, option=_OPTIONS)


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


async def send_json_error(send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """An ``{"error": ...}`` response sent straight from an ASGI middleware (no app, no route)."""
    body = dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
