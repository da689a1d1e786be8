"""The embedded default: the same migrations and repositories on a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.policy_schema import MixerSection, stored_policy
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.session import make_engine
from tests.fixtures.db import run_alembic
from tests.fixtures.factories import make_file, make_job, make_tenant


@pytest.fixture
def sqlite_session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'var' / 'keel.db'}"
    run_alembic(url, "upgrade", "head")
    engine = make_engine(url)
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
    finally:
        session.close()
        engine.dispose()


def test_claim_lease_and_fencing_on_sqlite(sqlite_session: Session, tmp_path: Path) -> None:
    tenant, _ = make_tenant(sqlite_session)
    file = make_file(sqlite_session, tenant.id, tmp_path)
    job = make_job(sqlite_session, tenant.id, file.id, metadata_={"k": "v"})
    sqlite_session.commit()
    jobs = JobRepository(sqlite_session)
    first = jobs.claim(job.id, "a", -1)
    assert first == 1
    assert jobs.claim(job.id, "b", 60, now=utcnow()) == 2  # the expired lease is reclaimed
    assert jobs.heartbeat(job.id, 1, 60) is None
    assert jobs.heartbeat(job.id, 2, 60, {"step": 1}) is not None
    assert jobs.finish(job.id, 2, "succeeded", trained_tokens=5)
    sqlite_session.commit()
    stored = jobs.get(tenant.id, job.id)
    assert stored is not None
    sqlite_session.refresh(stored)
    assert stored.status == "succeeded"
    assert stored.finished_at is not None
    assert stored.finished_at.tzinfo == UTC
    assert [j.id for j in jobs.list(tenant.id, None, 10, {"k": "v"}).items] == [job.id]
    assert jobs.list(tenant.id, None, 10, {"k": "w"}).items == []
    events = EventRepository(sqlite_session)
    event = events.append(job.id, tenant.id, "hello", data={"a": 1})
    assert event.seq == 1
    assert event.data == {"a": 1, "attempt": 2}  # the job's current claim
    # The reaper's count of lost leases (a JSON field query) works on SQLite too.
    events.append(job.id, tenant.id, "lost", data={"reason": "lease_expired"})
    assert events.count_with_reason(job.id, "lease_expired") == 1
    assert events.count_with_reason(job.id, "worker_shutdown") == 0
    assert jobs.release(job.id, 2) is False  # finished: nothing to release


def test_policy_defaults_from_file_then_versions(sqlite_session: Session, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allowed_models: [m1]\n")
    policies = PolicyRepository(sqlite_session, default_file=policy_file)
    version, policy = policies.current_versioned()
    assert (version, stored_policy(policy)) == (0, {"allowed_models": ["m1"]})
    assert policies.set({"allowed_models": ["m2"]}) == 1
    assert policies.set({"allowed_models": ["m3"]}) == 2
    assert stored_policy(policies.current()) == {"allowed_models": ["m3"]}
    # Readers get the typed document, the defaults filled in.
    assert policies.current().mixer.default_ratio == MixerSection().default_ratio
