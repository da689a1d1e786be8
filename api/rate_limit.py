"""Per-tenant request rate limits: 429 `rate_limited` with `Retry-After`, counted per tenant id.

One tenant must not be able to take the service down for the others (issue 22: 80 clients of
one tenant exhausted the database pool for everyone). Counters live in Redis on the production
path, so every API process shares them, and in this process's memory on the embedded default
(one API process). The algorithm is the `limits` library's sliding-window counter: two counters
per key and window, so the cost is O(1) per request whatever the limit, and a burst at a window
boundary is weighted against the previous window instead of doubling the allowance.

Reads (GET/HEAD) and writes (everything else, uploads included) have separate limits: a
client polling a job must not use up the allowance it needs to create the next one.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from api.errors import AppError
from db.settings import KeelSettings

log = logging.getLogger("keel.api")

RequestKind = Literal["read", "write"]
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A rate limiter must never be why a request hangs: Redis gets half a second, then the request
# goes through unlimited (fail open, with a warning) — the database and its pool are still
# guarded by their own timeouts and the 503 path.
_REDIS_TIMEOUT_S = 0.5


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    type = "rate_limit_error"


def request_kind(method: str) -> RequestKind:
    return "read" if method.upper() in _READ_METHODS else "write"


def storage_url(settings: KeelSettings) -> str:
    """Where counters live: the explicit setting, else the broker's Redis, else memory."""
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


def parse_limits(value: str, setting: str) -> list[RateLimitItem]:
    """`"600/minute"` or `"20/second;600/minute"`; empty or `off` means no limit."""
    if value.strip().lower() in ("", "off", "none"):
        return []
    try:
        return list(parse_many(value))
    except ValueError:
        raise ValueError(
            f"{setting} must look like '600/minute' or '20/second;600/minute' (or 'off')"
        ) from None


class TenantRateLimiter:
    def __init__(self, reads: list[RateLimitItem], writes: list[RateLimitItem], url: str) -> None:
        self._limits: dict[RequestKind, list[RateLimitItem]] = {"read": reads, "write": writes}
        options = {}
        if url.startswith(("redis://", "rediss://")):
            options = {
                "socket_timeout": _REDIS_TIMEOUT_S,
                "socket_connect_timeout": _REDIS_TIMEOUT_S,
            }
        self._storage = storage_from_string(url, wrap_exceptions=True, **options)
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._storage_failing = False

    @classmethod
    def from_settings(cls, settings: KeelSettings) -> TenantRateLimiter:
        return cls(
            parse_limits(settings.rate_limit_reads, "KEEL_RATE_LIMIT_READS"),
            parse_limits(settings.rate_limit_writes, "KEEL_RATE_LIMIT_WRITES"),
            storage_url(settings),
        )

    def check(self, tenant_id: str, method: str) -> None:
        """Count one request of ``tenant_id``; raise RateLimited when it is over a limit."""
        kind = request_kind(method)
        for item in self._limits[kind]:
            try:
                allowed = self._limiter.hit(item, "keel", kind, tenant_id)
                reset_time = (
                    None
                    if allowed
                    else self._limiter.get_window_stats(item, "keel", kind, tenant_id).reset_time
                )
            except StorageError as exc:
                self._warn_storage(exc)
                return
            if self._storage_failing:
                self._storage_failing = False
                log.warning("rate limit storage reachable again; limits apply")
            if not allowed:
                assert reset_time is not None
                retry_after = max(1, math.ceil(reset_time - time.time()))
                raise RateLimited(
                    f"Rate limit exceeded for {kind} requests ({item}); retry in {retry_after} s.",
                    headers={"Retry-After": str(retry_after)},
                )

    def _warn_storage(self, exc: StorageError) -> None:
        # Once per outage, not once per request; the class name only (the message can carry
        # the host).
        if not self._storage_failing:
            self._storage_failing = True
            log.warning(
                "rate limit storage unavailable (%s); requests pass unlimited until it is back",
                type(exc.storage_error).__name__,
            )
