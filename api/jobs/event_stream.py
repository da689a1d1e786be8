"""`GET /v1/fine_tuning/jobs/{id}/events?stream=true`: a job's events as server-sent events.

What a stream promises (issue 22 found it checked the key only at connect, outlived a revoked
key, never ended for a paused job, polled twice a second and had no cap):

- one poll every ``KEEL_SSE_POLL_SECONDS`` (default 2 s), in one short transaction that also
  re-checks the API key: a revoked key or a disabled tenant ends the stream at the next poll
  with an ``error`` event (``invalid_api_key``) — the key is never trusted beyond one interval;
- the stream ends with ``done`` once the job is terminal or paused (the events up to then are
  sent first), or gone; and closes without ``done`` after ``KEEL_SSE_MAX_SECONDS`` (default
  3600), so a stream on a long-queued job is not held forever (the client reconnects);
- at most ``KEEL_SSE_MAX_STREAMS_PER_TENANT`` (default 4) open streams per tenant, counted in
  Redis across all API processes when the rate limiter's storage is Redis (per process in the
  embedded default; api/jobs/stream_slots.py); one more is a 429 ``too_many_streams`` with
  ``Retry-After``, before anything is sent. Every poll renews the stream's place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from api.errors import error_body
from api.jobs.stream_slots import StreamSlot
from api.serializers import event_object
from db.job_status import JobStatus, is_terminal
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.tenants import ApiKeyRepository
from db.session import session_scope
from db.settings import KeelSettings


@dataclass(frozen=True)
class Poll:
    events: list[dict[str, Any]]
    last_seq: int
    authorized: bool
    ended: bool


# A stream ends once the job stops making events on its own: terminal, or paused (a resumed
# job is a new stream for the client to open).
_ENDS_STREAM = frozenset({JobStatus.PAUSED.value})


# The tenant of the stream's key while the key is still live (None once revoked or disabled).
KeyCheck = Callable[[Session], str | None]


def bearer_key_check(token: str) -> KeyCheck:
    """The JSON API's check: the bearer key the stream was opened with."""
    return lambda session: ApiKeyRepository(session).live_tenant(token)


def session_key_check(key_id: str) -> KeyCheck:
    """The web console's check: the key its signed session cookie names."""
    return lambda session: ApiKeyRepository(session).live_tenant_of_key_id(key_id)


def poll(key_check: KeyCheck, tenant_id: str, job_id: str, after_seq: int) -> Poll:
    """One short transaction: the key still valid for this tenant, the job's status, then the
    events after ``after_seq`` (status first: once it is final, this read drains the rest)."""
    with session_scope() as session:
        if key_check(session) != tenant_id:
            return Poll([], after_seq, authorized=False, ended=True)
        job = JobRepository(session).get(tenant_id, job_id)
        ended = job is None or is_terminal(job.status) or job.status in _ENDS_STREAM
        events = EventRepository(session).since(job_id, after_seq)
        rendered = [event_object(e) for e in events]
        last = events[-1].seq if events else after_seq
    return Poll(rendered, last, authorized=True, ended=ended)


@dataclass(frozen=True)
class StreamSettings:
    poll_seconds: float
    max_seconds: float


async def event_stream(
    key_check: KeyCheck, tenant_id: str, job_id: str, slot: StreamSlot, settings: StreamSettings
) -> AsyncIterator[dict[str, str]]:
    after_seq = 0
    deadline = time.monotonic() + settings.max_seconds
    try:
        while True:
            result = await run_in_threadpool(poll, key_check, tenant_id, job_id, after_seq)
            if not result.authorized:
                body = error_body(
                    "The API key was revoked or its organization disabled; the stream ends.",
                    type="authentication_error",
                    code="invalid_api_key",
                )
                yield {"event": "error", "data": json.dumps(body)}
                return
            slot.renew()
            after_seq = result.last_seq
            for event in result.events:
                yield {
                    "event": "fine_tuning.job.event",
                    "id": event["id"],
                    "data": json.dumps(event),
                }
            if result.ended:
                yield {"event": "done", "data": "[DONE]"}
                return
            if time.monotonic() >= deadline:
                return  # not `done`: the job goes on; the client reconnects
            await asyncio.sleep(min(settings.poll_seconds, max(0.0, deadline - time.monotonic())))
    finally:
        slot.release()


def open_event_stream(
    request: Request, settings: KeelSettings, key_check: KeyCheck, tenant_id: str, job_id: str
) -> EventSourceResponse:
    """A capped, re-checked event stream for ``job_id`` (the JSON API's and the console's).

    Raises:
        TooManyStreams: The tenant already holds its open streams (api/jobs/stream_slots.py).
    """
    slot = request.app.state.stream_slots.acquire(tenant_id)
    stream_settings = StreamSettings(settings.sse_poll_seconds, settings.sse_max_seconds)
    return EventSourceResponse(
        event_stream(key_check, tenant_id, job_id, slot, stream_settings),
        # Also when the generator never ran (client gone before the first byte).
        background=BackgroundTask(slot.release),
    )
