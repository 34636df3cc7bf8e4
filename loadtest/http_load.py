"""A small closed-loop HTTP/1.1 load generator on asyncio streams (stdlib only).

Each of ``concurrency`` clients keeps one keep-alive connection and sends its next
request as soon as the previous response is read, so latency is what one client sees
and throughput is what the server sustains.  Requests are pre-encoded bytes: the
client's own cost per request is a few tens of microseconds, small next to what it
measures, and identical for every target it is pointed at.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms)
        ok = sum(n for code, n in self.statuses.items() if 200 <= code < 300)
        non_2xx = sum(n for code, n in self.statuses.items() if not 200 <= code < 300)
        out = {"requests": int(lat.size), "ok": ok, "errors": self.errors, "non_2xx": non_2xx,
               "failed": self.errors + non_2xx, "req_per_s": lat.size / self.seconds if self.seconds else 0.0}
        if lat.size:
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            out.update(p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), max_ms=float(lat.max()))
        return out


def encode_post(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _client(host: str, port: int, requests, deadline: float, result: LoadResult) -> None:
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            request = next(requests)
            start = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            result.statuses[status] = result.statuses.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run_load_async(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float) -> LoadResult:
    result = LoadResult()
    cycle = itertools.cycle(requests)
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, cycle, start + seconds, result) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def run_load(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float) -> LoadResult:
    """Closed-loop load for ``seconds``; requests are used round-robin across all clients."""
    return asyncio.run(run_load_async(host, port, requests, concurrency, seconds))
