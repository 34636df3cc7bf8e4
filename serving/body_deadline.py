"""A deadline on reading a request body: a slow sender is cut off, not waited for.

Why: uvicorn times out idle keep-alive connections but not a request whose body trickles
in; a client sending one byte every few seconds would hold a connection (and a slot of
``limit_concurrency``) forever.  The deadline is for the whole body, counted from the
request's start, so a per-chunk trickle cannot keep extending it.  On expiry the app gets
an HTTP 408 (the same path as the body-size limit's 413) whose response closes the
connection.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException


class BodyDeadline:
    def __init__(self, app, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.seconds
        done = False

        async def receive_by_deadline():
            nonlocal done
            if done:  # after the body: the app may wait for a disconnect as long as it likes
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.seconds:g} s",
                                    headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        await self.app(scope, receive_by_deadline, send)
