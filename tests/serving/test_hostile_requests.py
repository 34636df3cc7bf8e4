"""Hostile clients against the real server (uvicorn, real Redis, real bundles), with API keys,
an admin token, a bundle root and a short body-read deadline configured.

Every case asserts the exact status, a JSON ``{"error": ...}`` body that quotes client input
only as a short escaped excerpt, and that the server is still healthy afterwards (``/healthz``
answers and an ordinary recommendation is served).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from ratingctr.serving.process import GatewayProcess, running_gateway

pytestmark = pytest.mark.integration

API_KEY = "client-key-" + "k" * 20
OTHER_KEY = "second-client-key"
ADMIN = "hostile-admin-token"
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0
LIMIT_CONCURRENCY = 16
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def bundle_root(tiny_bundles: dict[str, Path]) -> Path:
    return tiny_bundles["rating"].parent


@pytest.fixture(scope="module")
def hostile_gateway(tiny_bundles: dict[str, Path], redis_server, bundle_root: Path) -> Iterator[GatewayProcess]:
    env = {"RATINGCTR_ADMIN_TOKEN": ADMIN, "RATINGCTR_API_KEYS": f"{API_KEY}, {OTHER_KEY}",
           "RATINGCTR_BUNDLE_ROOT": str(bundle_root), "RATINGCTR_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "RATINGCTR_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "RATINGCTR_KEEP_ALIVE_S": str(KEEP_ALIVE_S), "RATINGCTR_LIMIT_CONCURRENCY": str(LIMIT_CONCURRENCY),
           "RATINGCTR_REDIS_PREFIX": "hostile"}
    with running_gateway({"rating": tiny_bundles["rating"], "binary": tiny_bundles["binary"]},
                         redis_url=redis_server.url, env=env) as gw:
        yield gw


@pytest.fixture(scope="module")
def anon(hostile_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile_gateway.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(hostile_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile_gateway.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
        yield c


def assert_healthy(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3


def assert_error(r: httpx.Response, status: int, fragment: str = "") -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert fragment in message, message
    assert message.isascii() or "\ud800" not in message
    assert "Traceback" not in message and len(message) < 1500
    return message


def raw(text: str) -> bytes:
    """JSON text as a client could send it: ``\\ud800`` escapes stay escapes (valid JSON)."""
    return text.encode()


def dumps(body: object) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \\udXXX escapes


# ---- strict, bounded input ------------------------------------------------------------
LONG = "x" * 257
BAD_BODIES = [
    ("surrogate user id", "/v1/recommend", dumps({"user_id": "\ud800"}), 422, "surrogate"),
    ("surrogate item id to score", "/v1/score", dumps({"user_id": "1", "item_ids": ["\udc00"]}), 422, "surrogate"),
    ("surrogate item id in an event", "/v1/events",
     dumps({"events": [{"user_id": "u1", "item_id": "\udfff", "rating": 4}]}), 422, "surrogate"),
    ("surrogate user_fields key", "/v1/recommend", dumps({"user_id": "new", "user_fields": {"\ud800": "F"}}), 422,
     "user_fields"),
    ("surrogate user_fields value", "/v1/recommend", dumps({"user_id": "new", "user_fields": {"gender": "\ud83d"}}),
     422, "surrogate"),
    ("surrogate unknown key", "/v1/recommend", dumps({"user_id": "u1", "\udbff" * 5: 1}), 422,
     "unicode string"),
    ("surrogate model name", "/v1/recommend", dumps({"user_id": "u1", "model": "\ud800"}), 422, "model"),
    ("NUL-suffixed item id", "/v1/score", dumps({"user_id": "u1", "item_ids": ["i5\u0000"]}), 422, "control"),
    ("NUL user id", "/v1/recommend", dumps({"user_id": "u1\u0000"}), 422, "control"),
    ("newline in model", "/v1/recommend", dumps({"user_id": "u1", "model": "rating\n"}), 422, "control"),
    ("escape char in a field value", "/v1/recommend", dumps({"user_id": "n", "user_fields": {"gender": "\x1b[31m"}}),
     422, "control"),
    ("boolean k", "/v1/recommend", raw('{"user_id": "u1", "k": true}'), 422, "k"),
    ("float k", "/v1/recommend", raw('{"user_id": "u1", "k": 3.0}'), 422, "k"),
    ("string k", "/v1/recommend", raw('{"user_id": "u1", "k": "3"}'), 422, "k"),
    ("k above RATINGCTR_MAX_K", "/v1/recommend", raw('{"user_id": "u1", "k": 1001}'), 422, "k"),
    ("huge k", "/v1/recommend", raw('{"user_id": "u1", "k": 1' + "0" * 400 + "}"), 422, "k"),
    ("string boolean", "/v1/recommend", raw('{"user_id": "u1", "exclude_seen": "no"}'), 422, "exclude_seen"),
    ("integer boolean", "/v1/recommend", raw('{"user_id": "u1", "exclude_seen": 0}'), 422, "exclude_seen"),
    ("boolean user id", "/v1/recommend", raw('{"user_id": false}'), 422, "user_id"),
    ("float user id", "/v1/recommend", raw('{"user_id": 1.5}'), 422, "user_id"),
    ("user id too long", "/v1/recommend", dumps({"user_id": LONG}), 422, "at most 256"),
    ("item id too long", "/v1/score", dumps({"user_id": "u1", "item_ids": [LONG]}), 422, "at most 256"),
    ("integer id too long", "/v1/score", raw('{"user_id": "u1", "item_ids": [1' + "0" * 300 + "]}"), 422,
     "at most 256"),
    ("model name too long", "/v1/recommend", dumps({"user_id": "u1", "model": "m" * 129}), 422, "at most 128"),
    ("field name too long", "/v1/recommend", dumps({"user_id": "n", "user_fields": {LONG: "F"}}), 422,
     "user_fields"),
    ("too many user fields", "/v1/recommend", dumps({"user_id": "n", "user_fields": {f"f{i}": "a" for i in range(65)}}),
     422, "user_fields"),
    ("float field value", "/v1/recommend", dumps({"user_id": "n", "user_fields": {"age": 25.5}}), 422, "user_fields"),
    ("nested field value", "/v1/recommend", dumps({"user_id": "n", "user_fields": {"age": {"a": 1}}}), 422,
     "user_fields"),
    ("boolean rating", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": true}]}'), 422,
     "rating"),
    ("infinite ts", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": 4, "ts": Infinity}]}'),
     422, "ts"),
    ("NaN ts", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": 4, "ts": NaN}]}'), 422,
     "ts"),
    ("overflowing rating", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": 1e400}]}'), 422,
     "rating"),
    ("NaN rating", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": NaN}]}'), 422,
     "rating"),
    ("negative ts", "/v1/events", raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": 4, "ts": -1}]}'), 422,
     "ts"),
    ("ts after the year 2286", "/v1/events",
     raw('{"events": [{"user_id": "u1", "item_id": "i1", "rating": 4, "ts": 1e11}]}'), 422, "ts"),
    ("too many events", "/v1/events", dumps({"events": [{"user_id": "u", "item_id": "i1", "rating": 3}] * 1001}), 422,
     "events"),
    ("events not a list", "/v1/events", raw('{"events": {"user_id": "u1"}}'), 422, "events"),
    ("too many item ids", "/v1/score", dumps({"user_id": "u1", "item_ids": ["i1"] * 10_001}), 422, "item_ids"),
    ("top-level null", "/v1/recommend", raw("null"), 422, "invalid request"),
    ("top-level string", "/v1/recommend", raw('"u1"'), 422, "invalid request"),
    ("empty body", "/v1/recommend", b"", 422, "invalid request"),
    ("truncated JSON", "/v1/score", raw('{"user_id": "u1", "item_ids": ["i1"'), 422, "JSON"),
    ("trailing garbage", "/v1/recommend", raw('{"user_id": "u1"} {"user_id": "u2"}'), 422, "JSON"),
    ("duplicate key, the last one bad", "/v1/recommend", raw('{"user_id": "u1", "user_id": "\\ud800"}'), 422,
     "surrogate"),
    ("unknown model", "/v1/recommend", dumps({"user_id": "u1", "model": "nope"}), 404, "unknown model 'nope'"),
    ("unknown field", "/v1/recommend", dumps({"user_id": "u1", "x" * 100_000: 1}), 422, "xxx"),
]


@pytest.mark.parametrize("path,body,status,fragment", [case[1:] for case in BAD_BODIES],
                         ids=[case[0] for case in BAD_BODIES])
def test_bad_input_is_a_clean_4xx_and_the_server_stays_healthy(keyed: httpx.Client, path, body, status,
                                                               fragment) -> None:
    message = assert_error(keyed.post(path, content=body, headers=JSON), status, fragment)
    assert "x" * 100 not in message and "\ud800" not in message
    assert_healthy(keyed)


def test_deep_nesting_huge_numbers_and_invalid_utf8_are_400(keyed: httpx.Client) -> None:
    """The JSON parser itself refuses these (recursion limit, int digit limit, encoding): 400, not a 500."""
    for body in (b'{"user_id": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                 b'{"user_id": ' + b"[" * 400_000,
                 b'{"user_id": "u1", "k": ' + b"9" * 10_000 + b"}",
                 b'{"user_id": "\xff\xfe"}'):
        assert_error(keyed.post("/v1/recommend", content=body, headers=JSON), 400, "error parsing the body")
    assert_healthy(keyed)


def test_wrong_content_types_are_422(keyed: httpx.Client) -> None:
    body = dumps({"user_id": "u1", "k": 2})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = keyed.post("/v1/recommend", content=body, headers={"content-type": content_type})
        assert_error(r, 422, "invalid request")
    assert_healthy(keyed)


def test_the_last_duplicate_key_wins_like_every_json_parser_in_python(keyed: httpx.Client) -> None:
    r = keyed.post("/v1/recommend", content=raw('{"user_id": "\\ud800", "user_id": "u2", "k": 2}'), headers=JSON)
    assert r.status_code == 200 and r.json()["user_id"] == "u2"


def test_oversized_bodies_are_413_by_header_and_while_streaming(keyed: httpx.Client) -> None:
    def chunks():
        for _ in range(40):
            yield b"[" * 65536
    assert_error(keyed.post("/v1/recommend", content=chunks(), headers=JSON), 413, "exceeds")
    assert_error(keyed.post("/v1/events", content=b"{" + b" " * (2 << 20) + b"}", headers=JSON), 413, "exceeds")
    assert_healthy(keyed)


# ---- callers: API keys and the admin token ---------------------------------------------
@pytest.mark.parametrize("headers", [
    {}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
    {"Authorization": f"Basic {API_KEY}"}, {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": API_KEY + "x"},
    {"Authorization": f"Bearer {ADMIN}"}, {"X-API-Key": ""},
], ids=["none", "wrong-key", "wrong-bearer", "no-scheme", "basic", "prefix", "longer", "admin-token", "empty"])
def test_client_endpoints_refuse_missing_and_wrong_keys_before_reading_the_body(anon: httpx.Client, keyed, headers):
    for path, body in (("/v1/recommend", b'{"user_id": "u1"}'), ("/v1/score", b"not json at all"),
                       ("/v1/events", b'{"events": []}')):
        r = anon.post(path, content=body, headers={**JSON, **headers})
        assert_error(r, 401, "API key")
        assert r.headers["www-authenticate"] == "Bearer"
    assert_healthy(keyed)


def test_binary_header_values_and_odd_paths_are_refused_cleanly(anon: httpx.Client, keyed: httpx.Client) -> None:
    for value in (b"\xff\xfe", "ключ".encode(), b"k" * 8000, API_KEY.encode() + b"\xff"):
        assert_error(anon.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": value}), 401, "API key")
    assert_error(keyed.get("/%ED%A0%80/%00/..%2F..%2Fetc%2Fpasswd"), 404, "Not Found")
    assert_error(keyed.post("/V1/RECOMMEND", json={"user_id": "u1"}), 404, "Not Found")
    assert_healthy(keyed)


def test_every_configured_key_works_by_either_header(anon: httpx.Client) -> None:
    for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {OTHER_KEY}"},
                    {"authorization": f"bearer {API_KEY}"}):
        r = anon.post("/v1/recommend", json={"user_id": "u1", "k": 2}, headers=headers)
        assert r.status_code == 200, r.text
    assert anon.get("/healthz").status_code == 200 and anon.get("/readyz").status_code == 200  # probes stay open


def test_admin_caller_is_judged_before_the_body(anon: httpx.Client, keyed: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {API_KEY}"},
                    {"X-API-Key": ADMIN}):
        for body in (b"{}", b"garbage", dumps({"name": "rating", "path": "/etc"})):
            assert_error(anon.post("/v1/admin/reload", content=body, headers={**JSON, **headers}), 401, "token")
    assert_error(anon.post("/v1/admin/anything-else", headers={"Authorization": "Bearer x"}), 401, "token")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert_error(anon.post("/v1/admin/reload", content=b"{}", headers={**JSON, **auth}), 422, "name")
    assert_healthy(keyed)


# ---- reloads: the bundle root and manifest file names -----------------------------------
def _reload(client: httpx.Client, path: str, name: str = "binary") -> httpx.Response:
    return client.post("/v1/admin/reload", json={"name": name, "path": path},
                       headers={"Authorization": f"Bearer {ADMIN}"})


def test_reloads_outside_the_bundle_root_are_403(anon: httpx.Client, keyed: httpx.Client, bundle_root: Path,
                                                 tiny_bundles, tmp_path: Path) -> None:
    outside = tmp_path / "outside-bundle"
    shutil.copytree(tiny_bundles["binary"], outside)
    link = bundle_root / f"link-{secrets.token_hex(4)}"
    link.symlink_to(outside, target_is_directory=True)
    try:
        for path in ("/etc", str(outside), f"{bundle_root}/../{bundle_root.name}-sibling", str(link),
                     f"{tiny_bundles['binary']}/../../{outside.parent.name}", "relative/path"):
            assert_error(_reload(anon, path), 403, "outside RATINGCTR_BUNDLE_ROOT")
    finally:
        link.unlink()
    before = keyed.get("/readyz").json()["models"]["binary"]["version"]
    r = _reload(anon, f"{bundle_root}/./{tiny_bundles['binary'].name}")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == before and r.json()["path"] == str(tiny_bundles["binary"].resolve())
    assert_healthy(keyed)


def test_reload_path_and_name_limits(anon: httpx.Client, keyed: httpx.Client, bundle_root: Path) -> None:
    assert_error(_reload(anon, str(bundle_root) + "/" + "a" * 4096), 422, "at most 4096")
    assert_error(_reload(anon, str(bundle_root) + "/\u0000x"), 422, "control")
    assert_error(_reload(anon, str(bundle_root), name="n" * 129), 422, "at most 128")
    assert_error(_reload(anon, str(bundle_root / "no-such-bundle")), 422, "bundle directory not found")
    assert_healthy(keyed)


def test_a_manifest_naming_a_file_outside_the_bundle_is_422_without_its_size_or_hash(
        anon: httpx.Client, keyed: httpx.Client, bundle_root: Path, tiny_bundles) -> None:
    evil = bundle_root / f"evil-{secrets.token_hex(4)}"
    shutil.copytree(tiny_bundles["binary"], evil)
    try:
        for name in ("/etc/passwd", "../dcnv2-rating/manifest.json", "..", "sub/file"):
            manifest = json.loads((tiny_bundles["binary"] / "manifest.json").read_text())
            manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
            (evil / "manifest.json").write_text(json.dumps(manifest))
            message = assert_error(_reload(anon, str(evil)), 422, "not a plain file name")
            assert "bytes, manifest says" not in message and "does not match" not in message
            if name == "/etc/passwd":
                assert f"{os.path.getsize('/etc/passwd')} bytes" not in message
    finally:
        shutil.rmtree(evil)
    assert_healthy(keyed)


# ---- routes, methods and metrics -------------------------------------------------------
def test_405_names_the_allowed_methods(keyed: httpx.Client) -> None:
    for method, path, allowed in (("GET", "/v1/recommend", "POST"), ("DELETE", "/v1/events", "POST"),
                                  ("POST", "/healthz", "GET")):
        r = keyed.request(method, path)
        assert_error(r, 405, "Method Not Allowed")
        assert r.headers["allow"] == allowed
    assert_healthy(keyed)


def _series(client: httpx.Client) -> list[str]:
    return [line for line in client.get("/metrics").text.splitlines() if line and not line.startswith("#")]


def test_unknown_paths_add_no_metric_series(keyed: httpx.Client) -> None:
    keyed.get("/warm-up-the-unmatched-label")
    keyed.get("/v1/recommend")  # and the 405 label
    keyed.post("/v1/admin/warm-up")  # and the admin 401 label
    before = _series(keyed)
    for _ in range(3334):  # 10,002 requests to random unknown paths, as the check asks
        path = f"/{secrets.token_hex(8)}/{secrets.token_urlsafe(12)}"
        assert keyed.get(path).status_code == 404
        keyed.get(f"/v1/{secrets.token_hex(6)}")
        keyed.post(f"/v1/admin/{secrets.token_hex(6)}")  # 401, counted under one admin label
    after = _series(keyed)
    assert [line.rsplit(" ", 1)[0] for line in after] == [line.rsplit(" ", 1)[0] for line in before]
    assert any('endpoint="unmatched",status="404"' in line for line in after)
    assert_healthy(keyed)


# ---- connections ---------------------------------------------------------------------
def _drip(sock: socket.socket, data: bytes, seconds_per_byte: float) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time until the server answers or closes; (answer, seconds)."""
    started, received = time.monotonic(), b""
    sock.settimeout(seconds_per_byte)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # the server closed the connection: cut off
            break
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        received += chunk
        if not chunk or b"\r\n\r\n" in received:
            break
    elapsed = time.monotonic() - started
    return received + _rest_of_body(sock, received), elapsed


def _rest_of_body(sock: socket.socket, received: bytes) -> bytes:
    """The body bytes still to come after an answer's head (it may arrive in a later segment)."""
    head, sep, body = received.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    if not sep or not lengths:
        return b""
    rest, missing = b"", int(lengths[0]) - len(body)
    sock.settimeout(5.0)
    while len(rest) < missing:
        try:
            chunk = sock.recv(4096)
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        rest += chunk
    return rest


def test_slow_request_headers_are_cut_off_with_408(hostile_gateway: GatewayProcess, keyed) -> None:
    """Slowloris: one header byte a second would take a minute; the header deadline ends it."""
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    headers = (b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               + f"X-API-Key: {API_KEY}\r\nX-Padding: {'p' * 20}\r\n\r\n".encode())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        received, elapsed = _drip(sock, headers, 1.0)
    assert elapsed < HEADER_TIMEOUT_S + 4, elapsed
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"headers did not arrive in time" in received
    assert_healthy(keyed)


def test_a_silent_connection_is_closed_by_the_header_deadline(hostile_gateway: GatewayProcess, keyed) -> None:
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT_S + 5) as sock:
        started = time.monotonic()
        answer = sock.recv(4096)  # nothing sent: the server must not wait forever
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and HEADER_TIMEOUT_S - 0.5 < elapsed < HEADER_TIMEOUT_S + 4, elapsed
    assert_healthy(keyed)


def test_a_kept_alive_connection_outlives_the_header_deadline(hostile_gateway: GatewayProcess, keyed) -> None:
    """The deadline covers each request's headers, not the connection's lifetime: one socket
    serves requests for longer than the header limit (each idle gap below the keep-alive)."""
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    body = b'{"user_id": "u1", "k": 2}'
    request = (b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               + f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    started, statuses = time.monotonic(), []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        while time.monotonic() - started < HEADER_TIMEOUT_S * 1.5:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += sock.recv(65536)
            statuses.append(head[:12])
            time.sleep(KEEP_ALIVE_S * 0.5)
    assert len(statuses) >= 4 and set(statuses) == {b"HTTP/1.1 200"}, statuses


def test_a_slow_sender_is_cut_off_by_the_body_deadline(hostile_gateway: GatewayProcess, keyed) -> None:
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    body = b'{"user_id": "u1", "k": 2}'
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        received, elapsed = _drip(sock, body, 1.0)  # one byte a second: the whole body would take 25 s
    assert elapsed < BODY_TIMEOUT_S + 4, elapsed
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"did not arrive within" in received
    assert_healthy(keyed)


def test_a_complete_body_sent_in_pieces_within_the_deadline_is_served(hostile_gateway: GatewayProcess) -> None:
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    body = b'{"user_id": "u1", "k": 2}'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for piece in (body[:10], body[10:]):
            sock.sendall(piece)
            time.sleep(0.3)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]


def test_idle_keep_alive_connections_are_closed(hostile_gateway: GatewayProcess) -> None:
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while not received.endswith(b'{"status":"ok"}'):
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # the server hung up on the idle connection
        assert time.monotonic() - started < KEEP_ALIVE_S + 3


def test_connections_beyond_the_concurrency_limit_get_503(hostile_gateway: GatewayProcess, keyed) -> None:
    host, port = hostile_gateway.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(LIMIT_CONCURRENCY)]
    try:
        time.sleep(0.2)
        with httpx.Client(base_url=hostile_gateway.url, timeout=10) as fresh:
            assert fresh.get("/healthz").status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while keyed.get("/healthz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_healthy(keyed)
