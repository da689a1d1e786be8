"""Open event streams per tenant: the cap behind 429 ``too_many_streams``.

Two implementations of one small interface (``acquire`` → a slot to ``renew`` on every poll and
``release`` at the end; ``open_count`` for tests and metrics):

- ``LocalStreamSlots`` counts in this process (the embedded default, one API process);
- ``RedisStreamSlots`` counts across every API process sharing the Redis (the production path:
  several uvicorn workers or replicas behind a balancer would otherwise each allow the cap).
  Each open stream is a member of a per-tenant sorted set scored by its lease expiry; a poll
  renews the lease, so a stream whose API process died frees its place within one lease instead
  of holding it for ever. Acquire is one Lua script (expire → count → add), so two processes
  racing for the last place cannot both win.

If Redis cannot be reached, ``RedisStreamSlots`` falls back to the per-process count (logged
once per outage): the cap loosens to one per process, streams keep working.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from api.errors import AppError

log = logging.getLogger("keel.api.streams")

STREAM_RETRY_AFTER_SECONDS = 5
# A Redis call that takes longer than this is an outage for the purposes of the cap.
_REDIS_TIMEOUT_S = 0.5

# KEYS[1] the tenant's set; ARGV: now, limit, member, expiry, lease in ms (the key itself goes
# when its newest member would, so an idle tenant leaves nothing behind).
# Returns the count held before this acquire, and 1 when the member was added.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then
  return {held, 0}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {held, 1}
"""


class TooManyStreams(AppError):
    status_code = 429
    code = "too_many_streams"
    type = "rate_limit_error"


def _refuse(held: int, limit: int) -> TooManyStreams:
    return TooManyStreams(
        f"Your organization has {held} event streams open; the limit is "
        f"{limit}. Close one, or list events without stream=true.",
        param="stream",
        headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)},
    )


@dataclass
class StreamSlot:
    """One held place. ``release`` is idempotent (the generator's ``finally`` and the response's
    background task both call it, whichever runs); ``renew`` keeps a shared lease alive."""

    _release: Callable[[], None]
    _renew: Callable[[], None] = lambda: None
    released: bool = False

    def renew(self) -> None:
        if not self.released:
            self._renew()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._release()


class StreamSlots(ABC):
    limit: int

    @abstractmethod
    def acquire(self, tenant_id: str) -> StreamSlot:
        """A place for one more stream of ``tenant_id``.

        Raises:
            TooManyStreams: The tenant already holds ``limit`` open streams.
        """

    @abstractmethod
    def open_count(self, tenant_id: str) -> int: ...


@dataclass
class LocalStreamSlots(StreamSlots):
    """Open streams per tenant in this process (thread-safe: routes run on a thread pool)."""

    limit: int
    _open: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, tenant_id: str) -> StreamSlot:
        with self._lock:
            held = self._open.get(tenant_id, 0)
            if held >= self.limit:
                raise _refuse(held, self.limit)
            self._open[tenant_id] = held + 1
        return StreamSlot(lambda: self._release(tenant_id))

    def _release(self, tenant_id: str) -> None:
        with self._lock:
            left = self._open.get(tenant_id, 0) - 1
            if left > 0:
                self._open[tenant_id] = left
            else:
                self._open.pop(tenant_id, None)

    def open_count(self, tenant_id: str) -> int:
        with self._lock:
            return self._open.get(tenant_id, 0)


class RedisStreamSlots(StreamSlots):
    """Open streams per tenant across every API process that shares ``client``'s Redis.

    Args:
        client: A Redis client (its database is the counters' namespace).
        limit: Streams one tenant may hold open at once.
        lease_seconds: How long a stream holds its place without a renew; several poll
            intervals, so a slow poll does not lose it.
        clock: Seconds since the epoch (tests move it to expire a dead process's streams).
    """

    def __init__(
        self,
        client: redis.Redis,
        limit: int,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self._client = client
        self._lease = lease_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._fallback = LocalStreamSlots(limit)
        self._failing = False

    @staticmethod
    def _key(tenant_id: str) -> str:
        return f"keel:streams:{tenant_id}"

    def acquire(self, tenant_id: str) -> StreamSlot:
        member = uuid.uuid4().hex
        now = self._clock()
        try:
            held, added = self._acquire(
                keys=[self._key(tenant_id)],
                args=[now, self.limit, member, now + self._lease, self._lease_ms],
            )
        except redis.RedisError as exc:
            self._warn(exc)
            return self._fallback.acquire(tenant_id)
        self._recovered()
        if not added:
            raise _refuse(int(held), self.limit)
        return StreamSlot(
            lambda: self._call(self._client.zrem, self._key(tenant_id), member),
            lambda: self._renew(tenant_id, member),
        )

    def _renew(self, tenant_id: str, member: str) -> None:
        # XX: only a member still present is renewed; one already expired stays out (its
        # place may have gone to another stream meanwhile).
        key = self._key(tenant_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(key, {member: self._clock() + self._lease}, xx=True)
        pipe.pexpire(key, self._lease_ms)
        self._call(pipe.execute)

    def open_count(self, tenant_id: str) -> int:
        key = self._key(tenant_id)
        try:
            return int(self._client.zcount(key, f"({self._clock()}", "+inf"))
        except redis.RedisError as exc:
            self._warn(exc)
            return self._fallback.open_count(tenant_id)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except redis.RedisError as exc:
            self._warn(exc)  # the lease runs out on its own

    def _warn(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            # The class name only: a connection error's text can carry the URL's password.
            log.warning(
                "stream cap storage unreachable (%s); capping per process until it is back",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("stream cap storage reachable again; the cap is shared again")


def stream_slots_for(url: str, limit: int, poll_seconds: float) -> StreamSlots:
    """Redis-backed when ``url`` is a Redis URL (the rate limiter's storage), else local."""
    if not url.startswith(("redis://", "rediss://")):
        return LocalStreamSlots(limit)
    client = redis.Redis.from_url(
        url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
    )
    return RedisStreamSlots(client, limit, lease_seconds=max(30.0, 5 * poll_seconds))
