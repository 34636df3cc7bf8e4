"""The request path's Redis circuit against a real Redis: a slow reply of a healthy Redis
degrades its own request only; timeouts in a row, or a failed probe, open the circuit."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from ratingctr.serving.user_store import UserStore

pytestmark = pytest.mark.integration


def _stall(url: str, seconds: float) -> threading.Thread:
    """Redis busy for ``seconds`` (DEBUG SLEEP blocks its one thread), from another client."""
    client = redis.Redis.from_url(url)
    thread = threading.Thread(target=lambda: (client.execute_command("DEBUG", "SLEEP", seconds), client.close()))
    thread.start()
    time.sleep(0.05)  # the SLEEP is running before the read is sent
    return thread


def test_one_slow_reply_degrades_one_read_and_timeouts_in_a_row_open_the_circuit(redis_server) -> None:
    store = UserStore(redis_server.url, prefix="circuit-test", timeout_s=0.1, retry_s=30.0, timeouts_to_open=3)
    assert store.read_user("u1", "v1") is not None
    # one stall longer than the read timeout: this read is degraded, the circuit stays closed
    stall = _stall(redis_server.url, 0.3)
    assert store.read_user("u1", "v1") is None
    stall.join()
    assert store.shard_available(0) and store.read_user("u1", "v1") is not None
    # three timeouts in a row (a hung Redis): the third opens the circuit for retry_s
    stall = _stall(redis_server.url, 0.6)
    assert [store.read_user("u1", "v1") for _ in range(2)] == [None, None]
    assert store.shard_available(0)
    assert store.read_user("u1", "v1") is None
    assert not store.shard_available(0)
    stall.join()
    assert store.read_user("u1", "v1") is None  # open: not even attempted, although Redis is back
    # a probe after the window that fails again reopens it at the first timeout
    store._circuit.down_until[0] = 0.0  # the retry window has passed
    stall = _stall(redis_server.url, 0.3)
    assert store.read_user("u1", "v1") is None and not store.shard_available(0)
    stall.join()
    store._circuit.down_until[0] = 0.0
    assert store.read_user("u1", "v1") is not None and store.shard_available(0)


def test_a_refused_connection_opens_the_circuit_at_once() -> None:
    from ratingctr.processes import free_port

    store = UserStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1, retry_s=30.0, timeouts_to_open=3)
    assert store.read_user("u1", "v1") is None
    assert not store.shard_available(0)


def test_the_timeout_count_setting_is_bounded(monkeypatch) -> None:
    from pydantic import ValidationError

    from ratingctr.serving.settings import GatewaySettings

    assert GatewaySettings().redis_timeouts_to_open == 3
    for bad in ("0", "-1", "101", "three"):
        monkeypatch.setenv("RATINGCTR_REDIS_TIMEOUTS_TO_OPEN", bad)
        with pytest.raises(ValidationError, match="redis_timeouts_to_open"):
            GatewaySettings()
