"""Webhook delivery end to end: a real Celery worker on the webhooks queue, the real reaper
(its outbox dispatcher), real Postgres and Redis, and a real receiver on 127.0.0.1 that verifies
with the unchanged `openai` SDK (`client.webhooks.unwrap`) and with `standardwebhooks`."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from openai import InvalidWebhookSignatureError
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook, WebhookVerificationError

from api.jobs import service as job_service
from cli.local_service import reaper_argv, spawn, stop, webhook_worker_argv
from db.models import WebhookDelivery, WebhookEndpoint
from db.repositories.policy import PolicyRepository
from db.repositories.webhooks import WebhookEndpointRepository, WebhookOutboxRepository
from db.session import get_sessionmaker, session_scope
from db.settings import get_settings
from db.webhook_events import EVENT_TYPES, JobWebhookEvent
from tests.fixtures.db import ROOT, TEST_POLICY
from tests.fixtures.factories import make_file, make_job, make_tenant
from tests.fixtures.webhook_receiver import SDK, Receiver, wait_for
from worker.queue import record_job_webhooks
from worker.webhooks import _pinned_url, deliver, retry_delay, signed_headers

# Short retries for the tests; the production defaults are in db.settings.
FAST = {
    "KEEL_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "KEEL_WEBHOOK_RETRY_MAX_INTERVAL_SECONDS": "0.5",
    "KEEL_WEBHOOK_RETRY_WINDOW_SECONDS": "60",
    "KEEL_WEBHOOK_DISPATCH_GRACE_SECONDS": "1",
    "KEEL_WEBHOOK_TIMEOUT_SECONDS": "3",
    "KEEL_REAPER_INTERVAL_SECONDS": "0.5",
}
ALLOW_LOOPBACK = {**TEST_POLICY, "webhooks": {"allowed_private_ranges": ["127.0.0.1/32"]}}


@pytest.fixture(scope="module")
def processes(keel_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The webhooks worker and the reaper, started once for the module; yields the log dir."""
    logs = tmp_path_factory.mktemp("webhook-procs")
    redis.Redis.from_url(keel_env["KEEL_BROKER_URL"]).flushdb()
    env = {**os.environ, **keel_env, **FAST, "PYTHONUNBUFFERED": "1"}
    worker = spawn(
        webhook_worker_argv(4, f"hooks-{os.getpid()}@%h"), logs / "worker.log", env, ROOT
    )
    reaper = spawn(reaper_argv(), logs / "reaper.log", env, ROOT)
    try:
        wait_for(
            lambda: "ready." in (logs / "worker.log").read_text(errors="replace"),
            timeout=90,
            what="the webhooks worker",
        )
        yield logs
    finally:
        stop(worker, reaper, timeout=10)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def _endpoint(
    session: Session, url: str, policy: dict[str, object] = ALLOW_LOOPBACK
) -> tuple[str, WebhookEndpoint]:
    PolicyRepository(session).set(policy)
    tenant, _ = make_tenant(session)
    endpoint = WebhookEndpointRepository(session).add(
        tenant.id, url=url, event_types=list(EVENT_TYPES), enabled=True, description=None
    )
    session.commit()
    return tenant.id, endpoint


def _delivery(delivery_id: str) -> WebhookDelivery:
    with get_sessionmaker()() as fresh:
        row = fresh.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


def _record(tenant_id: str, *events: str, job_id: str = "ftjob-test") -> list[str]:
    with session_scope() as session:
        return record_job_webhooks(session, tenant_id, job_id, *events)


def _record_without_handoff(tenant_id: str, event: str) -> str:
    """An outbox row nobody hands to the queue (nor, within the hour, the dispatcher): for
    calling the sender in this process."""
    with session_scope() as session:
        (delivery_id,) = WebhookOutboxRepository(session).record_job_events(
            tenant_id, "ftjob-test", (event,), dispatch_grace=timedelta(hours=1)
        )
    return delivery_id


def test_a_cancelled_job_is_delivered_signed_and_verifies_with_the_openai_sdk(
    processes: Path,
    fast: None,
    receiver: Receiver,
    session: Session,
    data_dir: Path,
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    job = make_job(session, tenant_id, make_file(session, tenant_id, data_dir).id)
    session.commit()
    # The real state change: the API's cancel writes the outbox row in its own commit.
    with session_scope() as api_session:
        job_service.cancel_job(api_session, tenant_id, job.id)

    wait_for(lambda: len(receiver.accepted) == 1, what="the delivery")
    (got,) = receiver.requests
    event = SDK.webhooks.unwrap(got.body, got.headers, secret=endpoint.secret)
    assert isinstance(event, FineTuningJobCancelledWebhookEvent)
    assert event.data.id == job.id
    assert event.type == "fine_tuning.job.cancelled"
    assert Webhook(endpoint.secret).verify(got.body, got.headers)["data"] == {"id": job.id}
    assert got.headers["webhook-signature"].startswith("v1,")
    delivery = session.scalars(select(WebhookDelivery)).one()
    assert got.headers["webhook-id"] == delivery.id
    wait_for(lambda: _delivery(delivery.id).status == "delivered", what="the recorded result")
    recorded = _delivery(delivery.id)
    assert recorded.attempts == 1
    assert recorded.last_status_code == 200

    # What a receiver must refuse: a tampered body, a wrong secret, a stale timestamp.
    other_secret = WebhookEndpointRepository(session).rotate_secret(endpoint)
    tampered = got.body.replace(job.id.encode(), b"ftjob-someone-else")
    stale = signed_headers(
        endpoint.secret,
        got.headers["webhook-id"],
        got.body.decode(),
        datetime.now(UTC) - timedelta(minutes=10),
    )
    for body, headers, secret in (
        (tampered, got.headers, receiver.secret),
        (got.body, got.headers, other_secret),
        (got.body, stale, receiver.secret),
    ):
        with pytest.raises(InvalidWebhookSignatureError):
            SDK.webhooks.unwrap(body, headers, secret=secret)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers)


def test_a_receiver_failing_three_times_gets_one_accepted_delivery_with_one_id(
    processes: Path, fast: None, receiver: Receiver, session: Session
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    receiver.script = [500, 500, 500]
    (delivery_id,) = _record(tenant_id, JobWebhookEvent.SUCCEEDED)

    wait_for(lambda: _delivery(delivery_id).status == "delivered", what="the fourth attempt")
    assert [r.status for r in receiver.requests] == [500, 500, 500, 200]
    assert len(receiver.accepted) == 1
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery_id}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    recorded = _delivery(delivery_id)
    assert recorded.attempts == 4
    assert [a["status_code"] for a in recorded.attempt_log] == [500, 500, 500, 200]
    assert recorded.last_error is None


def test_a_delivery_committed_but_never_handed_off_is_sent_by_the_dispatcher(
    processes: Path, fast: None, receiver: Receiver, session: Session, keel_env: dict[str, str]
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    # A process that records the webhook in its transaction and is killed right after the
    # commit, before its after-commit handoff to the queue runs (callbacks run in order).
    script = textwrap.dedent(
        f"""
        import os
        from db.after_commit import after_commit
        from db.session import session_scope
        from worker.queue import record_job_webhooks

        with session_scope() as session:
            after_commit(session, lambda: os._exit(9))
            record_job_webhooks(session, {tenant_id!r}, "ftjob-crashed", "fine_tuning.job.failed")
        """
    )
    env = {**os.environ, **keel_env, **FAST}
    crashed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=60)
    assert crashed.returncode == 9
    delivery = session.scalars(select(WebhookDelivery)).one()
    assert delivery.attempts == 0

    wait_for(lambda: len(receiver.accepted) == 1, what="the dispatcher's delivery")
    assert receiver.requests[0].headers["webhook-id"] == delivery.id
    assert receiver.requests[0].event.data.id == "ftjob-crashed"
    wait_for(lambda: _delivery(delivery.id).status == "delivered", what="the recorded result")
    assert "dispatched 1 webhook deliveries" in (processes / "reaper.log").read_text()


def test_redirects_are_not_followed(
    processes: Path, fast: None, receiver: Receiver, session: Session
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    receiver.script = [302]
    (delivery_id,) = _record(tenant_id, JobWebhookEvent.FAILED)
    wait_for(lambda: _delivery(delivery_id).status == "delivered", what="the retry")
    assert [(r.path, r.status) for r in receiver.requests] == [("/hook", 302), ("/hook", 200)]
    first = _delivery(delivery_id).attempt_log[0]
    assert first["status_code"] == 302
    assert "redirects are not followed" in first["error"]


def test_delivery_checks_the_address_again_and_refuses_a_range_no_longer_allowed(
    fast: None, receiver: Receiver, session: Session
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    PolicyRepository(session).set(TEST_POLICY)  # the provider withdrew the loopback range
    session.commit()
    delivery_id = _record_without_handoff(tenant_id, JobWebhookEvent.SUCCEEDED)
    # The sender itself, in this process: the outcome does not depend on queue timing.
    assert deliver(delivery_id) is None
    recorded = _delivery(delivery_id)
    assert recorded.status == "failed"
    assert "loopback" in (recorded.last_error or "")
    assert receiver.requests == []


def test_retries_last_at_least_the_window_then_give_up(
    fast: None, receiver: Receiver, session: Session
) -> None:
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    receiver.script = [503, 503]
    delivery_id = _record_without_handoff(tenant_id, JobWebhookEvent.SUCCEEDED)
    countdown = deliver(delivery_id)
    assert countdown is not None
    assert 0.1 <= countdown <= 0.2  # the first retry: [base/2, base]
    assert _delivery(delivery_id).status == "pending"
    # Created longer ago than the window: the next failure is the last.
    session.execute(
        WebhookDelivery.__table__.update()
        .where(WebhookDelivery.id == delivery_id)
        .values(
            created_at=datetime.now(UTC) - timedelta(seconds=61), next_attempt_at=datetime.now(UTC)
        )
    )
    session.commit()
    assert deliver(delivery_id) is None
    recorded = _delivery(delivery_id)
    assert recorded.status == "failed"
    assert recorded.attempts == 2
    assert recorded.last_status_code == 503


def test_a_slow_receiver_times_out_and_is_retried(
    fast: None, receiver: Receiver, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_WEBHOOK_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    tenant_id, endpoint = _endpoint(session, receiver.url)
    receiver.secret = endpoint.secret
    receiver.delay = 2.0
    delivery_id = _record_without_handoff(tenant_id, JobWebhookEvent.SUCCEEDED)
    assert deliver(delivery_id) is not None  # a retry is scheduled
    recorded = _delivery(delivery_id)
    assert recorded.status == "pending"
    assert recorded.last_error == "timeout"
    assert recorded.last_status_code is None


def test_the_request_goes_to_the_checked_address_with_the_url_kept() -> None:
    v4 = ipaddress.ip_address("203.0.113.7")
    v6 = ipaddress.ip_address("2001:db8::1")
    assert _pinned_url("https://hooks.example.com/a/b?x=1", v4) == "https://203.0.113.7/a/b?x=1"
    assert _pinned_url("https://hooks.example.com:8443", v6) == "https://[2001:db8::1]:8443/"


def test_the_default_schedule_retries_for_at_least_24_hours() -> None:
    settings = get_settings()
    assert settings.webhook_retry_window_seconds >= 24 * 3600
    delays = [
        retry_delay(
            n, settings.webhook_retry_base_seconds, settings.webhook_retry_max_interval_seconds
        )
        for n in range(1, 60)
    ]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(
            settings.webhook_retry_max_interval_seconds,
            settings.webhook_retry_base_seconds * 2 ** (n - 1),
        )
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= settings.webhook_retry_max_interval_seconds
