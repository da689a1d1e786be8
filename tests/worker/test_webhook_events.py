"""Which webhooks each job outcome records, written in the state change's own transaction: the
gate's branches, a quarantine release, a stale worker (nothing), a crashed job, a lost worker."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import JobStatus
from db.models import FineTuningJob, WebhookDelivery
from db.repositories.webhooks import WebhookEndpointRepository
from db.webhook_events import EVENT_TYPES
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from tests.worker.test_gate import _claimed, _publish, _result
from worker.reaper import reap_once
from worker.runner import _fail
from worker.settings import WorkerSettings


def _subscribe(session: Session, customer: Customer) -> None:
    WebhookEndpointRepository(session).add(
        customer.tenant_id,
        url="https://hooks.example.com/keel",
        event_types=list(EVENT_TYPES),
        enabled=True,
        description=None,
    )
    session.commit()


def _recorded(session: Session, job_id: str) -> list[str]:
    session.expire_all()
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.event_type)
    )
    return sorted(row.event_type for row in rows)


def test_each_gate_outcome_records_its_events(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _subscribe(session, alice)
    passed = _claimed(session, alice, data_dir)
    _publish(passed, _result(passed, data_dir, {"passed": True, "reasons": []}), data_dir)
    assert _recorded(session, passed.id) == ["fine_tuning.job.succeeded"]

    failed = _claimed(session, alice, data_dir)
    _publish(failed, _result(failed, data_dir, {"passed": False, "reasons": ["x"]}), data_dir)
    assert _recorded(session, failed.id) == [
        "fine_tuning.job.failed",
        "fine_tuning.job.safety_gate_failed",
    ]

    errored = _claimed(session, alice, data_dir)
    _publish(errored, _result(errored, data_dir, None), data_dir)
    assert _recorded(session, errored.id) == ["fine_tuning.job.failed"]


def test_quarantine_and_release(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    admin_headers: dict[str, str],
) -> None:
    _subscribe(session, alice)
    job = _claimed(session, alice, data_dir)
    result = _result(job, data_dir, {"passed": False, "reasons": ["x"]}, on_failure="quarantine")
    _publish(job, result, data_dir)
    assert _recorded(session, job.id) == ["fine_tuning.job.failed", "fine_tuning.job.quarantined"]
    released = client.post(f"/admin/v1/fine_tuning/jobs/{job.id}/release", headers=admin_headers)
    assert released.status_code == 200, released.text
    assert _recorded(session, job.id) == [
        "fine_tuning.job.failed",
        "fine_tuning.job.quarantined",
        "fine_tuning.job.released",
        "fine_tuning.job.succeeded",
    ]


def test_a_stale_worker_records_nothing(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _subscribe(session, alice)
    job = _claimed(session, alice, data_dir)
    stale = dataclasses.replace(job, token=job.token - 1)
    _publish(stale, _result(job, data_dir, {"passed": True, "reasons": []}), data_dir)
    # The state change rolled back, and its outbox rows with it.
    assert _recorded(session, job.id) == []


def test_a_crashed_job_and_a_lost_worker_record_failed(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _subscribe(session, alice)
    crashed = _claimed(session, alice, data_dir)
    _fail(crashed, "internal_error", "Training crashed: RuntimeError", callback=None)  # type: ignore[arg-type]
    assert _recorded(session, crashed.id) == ["fine_tuning.job.failed"]

    lost = make_job(
        session,
        alice.tenant_id,
        make_file(session, alice.tenant_id, data_dir).id,
        status=JobStatus.RUNNING,
        attempts=3,
        fencing_token=3,
        lease_owner="gone",
        lease_expires_at=utcnow() - timedelta(minutes=5),
    )
    session.commit()
    # Lost leases count, not claims (worker.reaper): with max_attempts=1 the first one gives up.
    reap_once(WorkerSettings(data_dir=data_dir, max_attempts=1))
    assert session.get(FineTuningJob, lost.id, populate_existing=True).status == "failed"  # type: ignore[union-attr]
    assert _recorded(session, lost.id) == ["fine_tuning.job.failed"]
