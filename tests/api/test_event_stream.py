"""The job event stream (api/jobs/event_stream.py) on the real Postgres test database: it ends
when the key is revoked or the tenant disabled, when the job is paused or terminal; polls at the
configured interval; and a tenant over its cap of open streams gets 429 + Retry-After.

Streams here are real: the TestClient request blocks until the app ends the stream, so every
test changes the state from a second thread (the worker's or the admin's side) once the stream
holds its slot, and asserts what the stream said before it closed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from api.jobs.stream_slots import StreamSlots
from api.main import create_app
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.events import EventRepository
from db.repositories.tenants import ApiKeyRepository, TenantRepository
from db.session import session_scope
from db.settings import KeelSettings, get_settings
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job

POLL = 0.05
CAP = 2


@pytest.fixture
def stream_client(
    engine: Engine, enqueued: list[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("KEEL_SSE_POLL_SECONDS", str(POLL))
    monkeypatch.setenv("KEEL_SSE_MAX_STREAMS_PER_TENANT", str(CAP))
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            yield client
    finally:
        get_settings.cache_clear()


def _running_job(session: Session, customer: Customer, data_dir: Path) -> str:
    file = make_file(session, customer.tenant_id, data_dir)
    job = make_job(session, customer.tenant_id, file.id, status=JobStatus.RUNNING)
    EventRepository(session).append(job.id, customer.tenant_id, "Training started")
    session.commit()
    return job.id


def _set_status(job_id: str, status: JobStatus) -> None:
    with session_scope() as s:
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(status=status))


def _slots(client: TestClient) -> StreamSlots:
    slots = client.app.state.stream_slots  # type: ignore[attr-defined]
    assert isinstance(slots, StreamSlots)
    return slots


def _when_open(
    client: TestClient, tenant_id: str, count: int, action: Callable[[], None]
) -> threading.Thread:
    """Run ``action`` in a thread once ``count`` streams of the tenant hold their slots."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while _slots(client).open_count(tenant_id) < count:
            assert time.monotonic() < deadline, "the stream never opened"
            time.sleep(0.01)
        time.sleep(3 * POLL)  # a few polls while the stream is live
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE body."""
    pairs, name = [], "message"
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[len("event: ") :].strip()
        elif line.startswith("data: "):
            pairs.append((name, line[len("data: ") :]))
            name = "message"
    return pairs


def _stream(client: TestClient, customer: Customer, job_id: str) -> tuple[int, str]:
    response = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events",
        headers=customer.headers,
        params={"stream": "true"},
    )
    return response.status_code, response.text


def test_revoked_key_ends_the_stream(
    stream_client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job_id = _running_job(session, alice, data_dir)
    [key] = ApiKeyRepository(session).list(alice.tenant_id)

    def revoke() -> None:
        with session_scope() as s:
            ApiKeyRepository(s).revoke(alice.tenant_id, key.id)

    thread = _when_open(stream_client, alice.tenant_id, 1, revoke)
    status, text = _stream(stream_client, alice, job_id)
    thread.join(5)
    assert status == 200
    events = _events(text)
    assert events[0][0] == "fine_tuning.job.event"
    assert json.loads(events[0][1])["message"] == "Training started"
    name, data = events[-1]
    assert name == "error"
    assert json.loads(data)["error"]["code"] == "invalid_api_key"
    assert "done" not in [n for n, _ in events]
    assert _slots(stream_client).open_count(alice.tenant_id) == 0


def test_disabled_tenant_ends_the_stream(
    stream_client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job_id = _running_job(session, alice, data_dir)

    def disable() -> None:
        with session_scope() as s:
            TenantRepository(s).set_disabled(alice.tenant_id, True)

    thread = _when_open(stream_client, alice.tenant_id, 1, disable)
    status, text = _stream(stream_client, alice, job_id)
    thread.join(5)
    assert status == 200
    name, data = _events(text)[-1]
    assert (name, json.loads(data)["error"]["code"]) == ("error", "invalid_api_key")


@pytest.mark.parametrize("final", [JobStatus.PAUSED, JobStatus.SUCCEEDED, JobStatus.CANCELLED])
def test_paused_or_terminal_job_ends_the_stream_after_its_events(
    stream_client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    final: JobStatus,
) -> None:
    job_id = _running_job(session, alice, data_dir)

    def stop() -> None:
        with session_scope() as s:
            EventRepository(s).append(job_id, alice.tenant_id, f"Job {final.value}")
        _set_status(job_id, final)

    thread = _when_open(stream_client, alice.tenant_id, 1, stop)
    status, text = _stream(stream_client, alice, job_id)
    thread.join(5)
    assert status == 200
    events = _events(text)
    messages = [json.loads(d)["message"] for n, d in events if n == "fine_tuning.job.event"]
    assert messages == ["Training started", f"Job {final.value}"]
    assert events[-1] == ("done", "[DONE]")


def test_streams_over_the_tenant_cap_are_429_until_one_closes(
    stream_client: TestClient, session: Session, alice: Customer, bob: Customer, data_dir: Path
) -> None:
    job_id = _running_job(session, alice, data_dir)
    bob_job = _running_job(session, bob, data_dir)
    results: list[tuple[int, str]] = []
    openers = [
        threading.Thread(
            target=lambda: results.append(_stream(stream_client, alice, job_id)), daemon=True
        )
        for _ in range(CAP)
    ]
    for opener in openers:
        opener.start()
    deadline = time.monotonic() + 20
    while _slots(stream_client).open_count(alice.tenant_id) < CAP:
        assert time.monotonic() < deadline, "the streams never opened"
        time.sleep(0.01)

    refused = stream_client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events", headers=alice.headers, params={"stream": "true"}
    )
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "too_many_streams",
        "rate_limit_error",
        "stream",
    )
    # The cap is per tenant: bob streams (and his stream ends with his job).
    thread = _when_open(
        stream_client, bob.tenant_id, 1, lambda: _set_status(bob_job, JobStatus.CANCELLED)
    )
    assert _stream(stream_client, bob, bob_job)[0] == 200
    thread.join(5)
    # Listing without stream=true is not capped.
    listed = stream_client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=alice.headers)
    assert listed.status_code == 200

    _set_status(job_id, JobStatus.SUCCEEDED)
    for opener in openers:
        opener.join(10)
    assert [status for status, _ in results] == [200] * CAP
    assert all(_events(text)[-1] == ("done", "[DONE]") for _, text in results)
    assert _slots(stream_client).open_count(alice.tenant_id) == 0
    # A slot freed is a slot usable again.
    status, text = _stream(stream_client, alice, job_id)
    assert status == 200
    assert _events(text)[-1] == ("done", "[DONE]")


def test_stream_settings_defaults_and_bounds() -> None:
    settings = KeelSettings(env="development", admin_key="")
    assert (settings.sse_poll_seconds, settings.sse_max_seconds) == (2.0, 3600.0)
    assert settings.sse_max_streams_per_tenant == 4
    with pytest.raises(ValueError, match="KEEL_SSE_MAX_STREAMS_PER_TENANT"):
        KeelSettings(env="development", admin_key="", sse_max_streams_per_tenant=0)
    with pytest.raises(ValueError, match="KEEL_SSE_POLL_SECONDS"):
        KeelSettings(env="development", admin_key="", sse_poll_seconds=0)
