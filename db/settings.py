"""Settings shared by the API and the worker's persistence layer (env prefix KEEL_, `.env`)."""

from __future__ import annotations

import math
from collections import Counter
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from db.blob_config import BlobSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
# Values published in docs, examples or older defaults: never accepted, in any mode.
PUBLISHED_SECRETS = frozenset({"change-me", "change-me-admin-key", "changeme", "admin", "secret"})
# Outside production (testing) a set key needs only this length.
MIN_ADMIN_KEY_LENGTH = 24
# Production: at least this long and this much estimated entropy (below).
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_PRODUCTION_SECRET_BITS = 100.0


def estimated_entropy_bits(secret: str) -> float:
    """Length × the Shannon entropy of the secret's own character distribution (bits).

    An upper bound on a guesser's work for keys drawn from that alphabet, and a good detector of
    the failure that matters: 40 × "a" is 0 bits, "abab…" is 1 bit per character. A 32-char
    hex key (uuid4) scores ~120, `secrets.token_urlsafe(32)` ~220.
    """
    if not secret:
        return 0.0
    counts = Counter(secret)
    n = len(secret)
    per_char = -sum(c / n * math.log2(c / n) for c in counts.values())
    return per_char * n


def secret_weakness(secret: str) -> str | None:
    """Why a production secret is too weak, without quoting it; None when it is acceptable."""
    lowered = secret.lower()
    if lowered in PUBLISHED_SECRETS or "change-me" in lowered or "changeme" in lowered:
        return "is a published example value"
    if len(secret) < MIN_PRODUCTION_SECRET_LENGTH:
        return f"is shorter than {MIN_PRODUCTION_SECRET_LENGTH} characters"
    if estimated_entropy_bits(secret) < MIN_PRODUCTION_SECRET_BITS:
        return (
            f"has too little entropy (under {MIN_PRODUCTION_SECRET_BITS:.0f} bits estimated; "
            "use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return None


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    PRODUCTION = "production"


class KeelSettings(BlobSettings):
    # hide_input_in_errors: a refused secret must never be echoed in the start-up error.
    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    env: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///./var/keel.db"
    broker_url: str = "sqla+sqlite:///./var/broker.db"
    # data_dir and the blob store settings (KEEL_BLOB_URL, KEEL_S3_*): db.blob_config.
    max_upload_bytes: int = 512 * 1024 * 1024
    # JSON request bodies (job create, policy PUT, tenant create) are capped on the bytes
    # received, before any parsing; uploads keep their own streamed cap above.
    max_json_body_bytes: int = 1024 * 1024
    # Unset in development: a random key is generated on first start, printed once, and only
    # its hash kept under data_dir (db.admin_key). Required outside development.
    admin_key: str = ""
    # Bearer token for /metrics. Unset: open outside production, refused (403) in production.
    metrics_token: str = ""
    policy_file: Path = Path("policy.yaml")
    # Database connection pool, per process. Sized to the API's concurrency: sync routes and
    # dependencies run on AnyIO's thread pool of 40, so 10 + 30 overflow means a request thread
    # never queues for a connection behind the other threads; past that (or with Postgres too
    # busy), a request waits db_pool_timeout seconds and answers 503 database_unavailable with
    # Retry-After. Overflow connections are opened only when needed and closed when returned,
    # so the worker and reaper (a few connections each) pay nothing for the headroom. Keep
    # (API processes × 40) + workers under Postgres' max_connections (default 100).
    db_pool_size: int = 10
    db_max_overflow: int = 30
    db_pool_timeout: float = 5.0
    # Per-tenant request rate limits (api.rate_limit), in the `limits` notation: "600/minute",
    # "20/second;600/minute", or "off". Reads are GET/HEAD; writes are everything else,
    # uploads included. Generous defaults: the test suite and the demo never reach them.
    rate_limit_reads: str = "1200/minute"
    rate_limit_writes: str = "600/minute"
    # Where the counters live (a `limits` storage URL). Empty: the broker's Redis when
    # KEEL_BROKER_URL is redis://, shared by every API process; else this process's memory.
    rate_limit_storage_url: str = ""
    # Webhooks (worker.webhooks; where they may go is the policy's `webhooks` section).
    # Per attempt: connect, write and read each time out after this many seconds.
    webhook_timeout_seconds: float = 10.0
    # Retry delays: exponential from the base, capped, with jitter (each delay is drawn from
    # [d/2, d]); retried until an attempt fails past the window (at least 24 h after the event).
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_max_interval_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 24 * 3600.0
    # A delivery not handed to the webhooks queue within this long after its commit (the
    # process died between commit and send, the broker was down) is handed over by the reaper.
    webhook_dispatch_grace_seconds: float = 60.0
    # Retries due within this many seconds are scheduled on the queue (countdown); later ones
    # wait in the outbox for the reaper's dispatcher (long countdowns do not survive a broker's
    # visibility timeout).
    webhook_inline_retry_max_seconds: float = 300.0
    # Event streams (GET …/events?stream=true, api.jobs.event_stream): seconds between polls
    # (each re-checks the API key), the longest a stream stays open, and the open streams a
    # tenant may hold per API process (one more is a 429 too_many_streams).
    sse_poll_seconds: float = 2.0
    sse_max_seconds: float = 3600.0
    sse_max_streams_per_tenant: int = 4

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> KeelSettings:
        # Messages name the setting and the reason, never the value.
        if self.admin_key.lower() in PUBLISHED_SECRETS:
            raise ValueError(
                "KEEL_ADMIN_KEY is a published example value; unset it (development generates "
                "a random key on first start) or set a random key"
            )
        if self.env == Environment.PRODUCTION:
            for name, value, required in (
                ("KEEL_ADMIN_KEY", self.admin_key, True),
                ("KEEL_METRICS_TOKEN", self.metrics_token, False),
            ):
                if not value and not required:
                    continue
                weakness = secret_weakness(value) if value else "is not set"
                if weakness:
                    raise ValueError(f"{name} {weakness} (KEEL_ENV=production)")
        elif self.env == Environment.TESTING and len(self.admin_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"KEEL_ADMIN_KEY must be a random value of at least {MIN_ADMIN_KEY_LENGTH} "
                f"characters when KEEL_ENV={self.env.value}"
            )
        return self

    @model_validator(mode="after")
    def _positive_limits(self) -> KeelSettings:
        if self.max_upload_bytes <= 0:
            raise ValueError("KEEL_MAX_UPLOAD_BYTES must be positive")
        if self.sse_poll_seconds <= 0 or self.sse_max_seconds <= 0:
            raise ValueError("KEEL_SSE_POLL_SECONDS and KEEL_SSE_MAX_SECONDS must be positive")
        if self.sse_max_streams_per_tenant <= 0:
            raise ValueError("KEEL_SSE_MAX_STREAMS_PER_TENANT must be positive")
        if self.max_json_body_bytes <= 0:
            raise ValueError("KEEL_MAX_JSON_BODY_BYTES must be positive")
        if min(self.webhook_timeout_seconds, self.webhook_retry_base_seconds) <= 0:
            raise ValueError(
                "KEEL_WEBHOOK_TIMEOUT_SECONDS and KEEL_WEBHOOK_RETRY_BASE_SECONDS must be positive"
            )
        if self.db_pool_size <= 0 or self.db_max_overflow < 0 or self.db_pool_timeout <= 0:
            raise ValueError(
                "KEEL_DB_POOL_SIZE and KEEL_DB_POOL_TIMEOUT must be positive, "
                "KEEL_DB_MAX_OVERFLOW not negative"
            )
        return self

    @property
    def resolved_policy_file(self) -> Path:
        """The policy file; a relative path that is not under the cwd is looked up in the repo."""
        if self.policy_file.is_absolute() or self.policy_file.exists():
            return self.policy_file
        return REPO_ROOT / self.policy_file


@lru_cache(maxsize=1)
def get_settings() -> KeelSettings:
    return KeelSettings()
