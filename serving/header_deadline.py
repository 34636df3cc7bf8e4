"""uvicorn's HTTP protocol with a deadline on request *headers* (and on silent connections).

uvicorn times out idle keep-alive connections and ``body_deadline.py`` bounds the body, but
nothing bounds the time a client takes to send the request line and headers: a client that
opens a connection and sends one header byte every few seconds (slowloris), or nothing at
all, holds a connection slot forever, and ``limit_concurrency`` of them stop the worker.
Headers arrive before the ASGI app is called, so only the protocol can time them.

The deadline is armed when the connection opens and when a new request on a kept-alive
connection begins, and disarmed once the headers are complete; when it passes, the client
gets a ``408`` with a JSON error and the connection closes.  Selected with
``uvicorn.run(..., http=HeaderDeadlineProtocol)`` (``ratingctr serve`` does) or
``uvicorn --http ratingctr.serving.header_deadline:HeaderDeadlineProtocol``.

The limit is ``RATINGCTR_HEADER_TIMEOUT_S`` (``GatewaySettings.header_timeout_s``), read when
this module is imported: uvicorn builds the protocol per connection with a fixed signature,
and worker processes import the module afresh, so the environment is the one channel that
reaches all of them.
"""
from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ratingctr.serving.settings import GatewaySettings

HEADER_TIMEOUT_ENV = "RATINGCTR_HEADER_TIMEOUT_S"
_BODY = b'{"error": "request headers did not arrive in time; the connection is closed"}'
_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
             b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


def header_timeout_s() -> float:
    raw = os.environ.get(HEADER_TIMEOUT_ENV)
    return float(raw) if raw else float(GatewaySettings.model_fields["header_timeout_s"].default)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` + a timer from connection (or request) start to headers complete."""

    timeout_s: float = header_timeout_s()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.timeout_s, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE)
            self.transport.close()
