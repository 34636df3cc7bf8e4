"""Gateway settings: one pydantic-settings model, filled from CLI flags and environment.

``ratingctr serve`` writes its flags into the environment before uvicorn starts, so every
worker process (``--workers N``) builds the same settings from the same source.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ratingctr.bundle import BundleError, check_key, read_key_file


def parse_bundle_specs(specs: list[str] | str) -> dict[str, Path]:
    """``["rating=bundles/a", "bundles/b"]`` or ``"rating=bundles/a,bundles/b"`` → {name: path}.

    A spec without ``NAME=`` is named after its folder.  Order is kept: the first bundle
    is the default model.
    """
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    bundles: dict[str, Path] = {}
    for spec in specs:
        spec = spec.strip()
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        name = name.strip()
        if not name or not path.strip():
            raise ValueError(f"bundle spec {spec!r} must be PATH or NAME=PATH")
        if name in bundles:
            raise ValueError(f"bundle name {name!r} is given twice")
        bundles[name] = Path(path.strip())
    return bundles


class GatewaySettings(BaseSettings):
    """Everything the gateway reads at start-up.  Environment names are ``RATINGCTR_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RATINGCTR_", extra="ignore", populate_by_name=True)

    bundles: str = Field("", description="comma-separated NAME=PATH bundle specs; the first is the default model")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "RATINGCTR_REDIS_URL"),
                                  description="external Redis; unset: an embedded redis-server is started")
    redis_dir: Path = Field(Path.home() / ".cache" / "ratingctr" / "redis",
                            description="data directory of the embedded Redis (append-only file)")
    redis_prefix: str = Field("rc", description="key prefix, so several deployments can share one Redis")
    redis_shards: int | None = Field(None, ge=1, le=16_384, description="user/event shards (serving/redis_keys.py); "
                                     "unset: 64 on a Redis Cluster (redis+cluster:// URL), 1 on a plain Redis. "
                                     "Fixed once data is written: a gateway with another count refuses to start")
    redis_timeout_s: float = Field(0.1, gt=0, description="socket timeout of the request-path reads and connects "
                                   "(bounds a stall if Redis hangs)")
    redis_write_timeout_s: float = Field(2.0, gt=0, description="socket timeout of event writes, bulk loads and "
                                         "reload notices (they wait for Redis's append-only-file fsync)")
    redis_retry_s: float = Field(1.0, gt=0, description="after a Redis failure, serve degraded this long before retrying")
    redis_timeouts_to_open: int = Field(3, ge=1, le=100, description="request-path read timeouts in a row (of a Redis "
                                        "that was answering) before the gateway serves degraded for redis_retry_s; "
                                        "each one still degrades its own request")
    admin_token: str | None = Field(None, description="bearer token for /v1/admin/*; unset disables admin endpoints")
    device: str = Field("auto", description="auto | cpu | cuda for ONNX Runtime and FAISS")
    ort_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per worker")
    candidates: int = Field(50, ge=1, le=10_000, description="FAISS candidates scored per /v1/recommend "
                                                          "(serving.ranker.DEFAULT_CANDIDATES says why 50)")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies are refused with 413")
    max_k: int = Field(1000, ge=1, description="the largest k a /v1/recommend request may ask for")
    max_item_ids: int = Field(10_000, ge=1)
    max_events: int = Field(1000, ge=1, description="events per /v1/events request")
    max_id_chars: int = Field(256, ge=1, le=65_536, description="longest user id, item id, field name or value")
    max_model_chars: int = Field(128, ge=1, le=4096, description="longest model (bundle) name")
    max_path_chars: int = Field(4096, ge=1, le=65_536, description="longest bundle path in a reload request")
    max_user_fields: int = Field(64, ge=1, le=4096, description="entries in one request's user_fields")
    api_keys: str | None = Field(None, description="comma-separated keys for the client endpoints (Authorization: "
                                 "Bearer KEY or X-API-Key: KEY); unset: the client endpoints are open")
    bundle_root: Path | None = Field(None, description="admin reloads only from bundles inside this directory "
                                     "(real path); unset: any path")
    limit_concurrency: int | None = Field(1000, ge=1, description="uvicorn: connections+tasks per worker before "
                                          "503; unset: unlimited")
    keep_alive_s: float = Field(5.0, gt=0, description="uvicorn: idle keep-alive connections close after this")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must deliver a request's headers within "
                                    "this many seconds of opening (or of the request's first byte), else 408 and "
                                    "the connection closes (serving/header_deadline.py)")
    body_timeout_s: float = Field(15.0, gt=0, description="a request body must arrive completely within this "
                                  "many seconds of the request's start, else 408 and the connection closes")
    warmup_calls: int = Field(5, ge=0, description="scoring calls on a freshly loaded bundle before it serves")
    sync_interval_s: float = Field(1.0, gt=0, description="how often a worker checks Redis for reloads and bulk loads")
    event_id_ttl_s: int = Field(86400, ge=1, description="how long an event_id is remembered: a retry within this "
                                "window stores nothing twice")
    # 1,000 and not more: a request reads the whole set whenever it changed (a junk-flooded
    # user who keeps posting pays for every member; reports/bench/issue14/junk_seen.md), while a
    # known user's training history is excluded from the bundle itself, so the set mostly needs
    # the events since export.
    max_seen_per_user: int = Field(1_000, ge=1, description="seen items kept per user (the newest); also the most "
                                   "a request reads")
    seen_cache_items: int = Field(1_000_000, ge=0, le=1_000_000_000,
                                  description="per-worker cache of users' seen item indices, in index slots "
                                  "(8 bytes each; an entry costs its length + 32): a request re-reads a user's "
                                  "seen set from Redis only when it changed. 0 disables the cache")
    follow_backoff_max_s: float = Field(300.0, gt=0, description="a worker that failed to follow a published reload "
                                        "retries with exponential backoff capped at this")
    stale_version_grace_s: float = Field(3600.0, gt=0, description="field rows in Redis of a bundle version no "
                                         "worker has served for this long are deleted (must exceed twice "
                                         "RATINGCTR_SYNC_INTERVAL_S)")
    bundle_key: SecretStr | None = Field(None, description="HMAC key for signed bundles (>= 16 bytes): set, every "
                                         "bundle load refuses unsigned or forged bundles")
    bundle_key_file: Path | None = Field(None, description="file holding the bundle key (alternative to "
                                         "RATINGCTR_BUNDLE_KEY; surrounding whitespace ignored)")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """A cluster URL is parsed here, so a bad one is one clear start-up error, not a traceback."""
        from ratingctr.serving.redis_connection import ClusterUrl, is_cluster_url

        if value and is_cluster_url(value):
            ClusterUrl.parse(value)  # BadRedisUrl is a ValueError: pydantic reports it
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value.lower() not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        return value.lower()

    @model_validator(mode="after")
    def _grace_outlasts_the_sync_interval(self) -> "GatewaySettings":
        """Workers refresh their claim once per sync pass: a shorter grace would drop served versions."""
        if self.stale_version_grace_s <= 2 * self.sync_interval_s:
            raise ValueError("stale_version_grace_s must exceed twice sync_interval_s")
        return self

    @model_validator(mode="after")
    def _bundle_key_readable(self) -> "GatewaySettings":
        """A configured key must be usable at start-up, not at the first reload."""
        self.bundle_key_bytes()
        return self

    def bundle_key_bytes(self) -> bytes | None:
        """The bundle signing key, or None when bundles are not checked for signatures.

        Why both sources are refused together: two keys that disagree would make which
        bundles load depend on a precedence rule nobody remembers.
        """
        if self.bundle_key is not None and self.bundle_key_file is not None:
            raise ValueError("set RATINGCTR_BUNDLE_KEY or RATINGCTR_BUNDLE_KEY_FILE, not both")
        try:
            if self.bundle_key_file is not None:
                return read_key_file(self.bundle_key_file)
            if self.bundle_key is not None:
                return check_key(self.bundle_key.get_secret_value().strip().encode(), "RATINGCTR_BUNDLE_KEY")
        except BundleError as exc:
            raise ValueError(str(exc)) from exc
        return None

    def api_key_list(self) -> list[str]:
        """The configured client API keys (empty: client endpoints need no key)."""
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    def bundle_map(self) -> dict[str, Path]:
        bundles = parse_bundle_specs(self.bundles)
        if not bundles:
            raise ValueError("no bundle given: pass --bundle PATH or set RATINGCTR_BUNDLES")
        return bundles
