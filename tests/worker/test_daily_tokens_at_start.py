"""A job that starts when its tenant has no trained tokens left today fails without training."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from worker.runner import run_job
from worker.settings import WorkerSettings


def test_no_daily_tokens_left_fails_the_job_at_start(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    policy = PolicyRepository(session).current()
    quotas = policy.quotas.model_copy(update={"max_trained_tokens_per_day": 1000})
    PolicyRepository(session).set(policy.model_copy(update={"quotas": quotas}))
    file = make_file(session, alice.tenant_id, data_dir)
    make_job(
        session,
        alice.tenant_id,
        file.id,
        status=JobStatus.SUCCEEDED,
        trained_tokens=1000,
        finished_at=utcnow() - timedelta(hours=2),
    )
    # Created while the tenant was under its quota; started once it is not.
    queued = make_job(session, alice.tenant_id, file.id, status=JobStatus.QUEUED)
    session.commit()
    run_job(queued.id, WorkerSettings(data_dir=data_dir, device="cpu"))
    with session_scope() as s:
        job = JobRepository(s).get_unscoped(queued.id)
        assert job is not None
        assert (job.status, job.error_code) == ("failed", "quota_trained_tokens_exceeded")
        assert job.trained_tokens is None
