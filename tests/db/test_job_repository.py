"""JobRepository on real Postgres: claim CAS, leases, fencing, cancel/pause/resume, reaper
queries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from threading import Barrier

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.session import session_scope
from tests.fixtures.factories import make_file, make_job, make_tenant


def _queued_job(session: Session, tmp_path: Path, **fields: object) -> FineTuningJob:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    job = make_job(session, tenant.id, file.id, **fields)  # type: ignore[arg-type]
    session.commit()
    return job


def _claim(job_id: str, worker: str, lease: int = 60) -> int | None:
    with session_scope() as s:
        return JobRepository(s).claim(job_id, worker, lease)


def test_concurrent_claims_exactly_one_wins(session: Session, tmp_path: Path) -> None:
    job = _queued_job(session, tmp_path)
    workers = 8
    barrier = Barrier(workers)

    def attempt(i: int) -> int | None:
        barrier.wait()
        return _claim(job.id, f"w{i}")

    with ThreadPoolExecutor(workers) as pool:
        tokens = list(pool.map(attempt, range(workers)))
    assert sorted(t for t in tokens if t is not None) == [1]
    assert tokens.count(None) == workers - 1
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.fencing_token) == ("running", 1, 1)
        assert stored.started_at is not None
        assert stored.lease_owner is not None


def test_second_claim_of_live_lease_fails(session: Session, tmp_path: Path) -> None:
    job = _queued_job(session, tmp_path)
    assert _claim(job.id, "a") == 1
    assert _claim(job.id, "b") is None


def test_expired_lease_reclaim_bumps_token_and_fences_the_old_worker(
    session: Session, tmp_path: Path
) -> None:
    job = _queued_job(session, tmp_path)
    old = _claim(job.id, "a", lease=-1)  # a lease that has already expired
    assert old == 1
    with session_scope() as s:
        assert JobRepository(s).find_expired_leases(utcnow()) == [job.id]
    new = _claim(job.id, "b")
    assert new == 2
    with session_scope() as s:
        jobs = JobRepository(s)
        assert jobs.heartbeat(job.id, old, 60) is None
        assert jobs.finish(job.id, old, "succeeded") is False
        assert jobs.mark_paused(job.id, old) is False
        assert jobs.set_phase(job.id, old, "evaluating") is False
        state = jobs.heartbeat(job.id, new, 60, {"phase": "training", "step": 3})
        assert state is not None
        assert not state.cancel_requested
        assert jobs.set_phase(job.id, new, "evaluating") is True
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert stored.attempts == 2
        assert stored.lease_owner == "b"
        assert stored.progress == {"phase": "evaluating", "step": 3}
        assert JobRepository(s).find_expired_leases(utcnow()) == []


def test_finish_clears_lease_and_sets_outputs(session: Session, tmp_path: Path) -> None:
    job = _queued_job(session, tmp_path)
    token = _claim(job.id, "a")
    assert token is not None
    with session_scope() as s:
        done = JobRepository(s).finish(
            job.id,
            token,
            "succeeded",
            result_files=["file-x"],
            fine_tuned_model="ft:m",
            trained_tokens=42,
        )
        assert done
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert stored.status == "succeeded"
        assert stored.finished_at is not None
        assert stored.lease_owner is None
        assert stored.lease_expires_at is None
        assert (stored.result_files, stored.fine_tuned_model, stored.trained_tokens) == (
            ["file-x"],
            "ft:m",
            42,
        )
        # Terminal: a second finish with the same token no longer matches.
        assert JobRepository(s).finish(job.id, token, "failed") is False


def test_claim_is_refused_for_terminal_and_paused_jobs(session: Session, tmp_path: Path) -> None:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    ids = [
        make_job(session, tenant.id, file.id, status=s).id
        for s in (
            JobStatus.SUCCEEDED,
            JobStatus.CANCELLED,
            JobStatus.PAUSED,
            JobStatus.VALIDATING_FILES,
        )
    ]
    session.commit()
    assert [_claim(i, "w") for i in ids] == [None, None, None, None]


def test_cancel_queued_is_immediate_running_is_cooperative(
    session: Session, tmp_path: Path
) -> None:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    queued = make_job(session, tenant.id, file.id)
    running = make_job(session, tenant.id, file.id)
    session.commit()
    token = _claim(running.id, "w")
    assert token is not None
    with session_scope() as s:
        jobs = JobRepository(s)
        cancelled = jobs.request_cancel(tenant.id, queued.id)
        assert cancelled is not None
        assert cancelled.status == "cancelled"
        flagged = jobs.request_cancel(tenant.id, running.id)
        assert flagged is not None
        assert flagged.status == "running"
        assert flagged.cancel_requested_at is not None
        assert jobs.request_cancel("org-other", running.id) is None
    with session_scope() as s:
        state = JobRepository(s).heartbeat(running.id, token, 60)
        assert state is not None
        assert state.cancel_requested
        assert JobRepository(s).finish(running.id, token, "cancelled")
    assert _claim(queued.id, "w") is None  # a stale message for a cancelled job no-ops


def test_pause_and_resume(session: Session, tmp_path: Path) -> None:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    job = make_job(session, tenant.id, file.id)
    session.commit()
    token = _claim(job.id, "w")
    assert token is not None
    with session_scope() as s:
        paused = JobRepository(s).request_pause(tenant.id, job.id)
        assert paused is not None
        assert paused.status == "pausing"
    with session_scope() as s:
        state = JobRepository(s).heartbeat(job.id, token, 60)
        assert state is not None
        assert state.pause_requested
        assert JobRepository(s).mark_paused(job.id, token)
    with session_scope() as s:
        resumed = JobRepository(s).resume(tenant.id, job.id)
        assert resumed is not None
        assert resumed.status == "queued"
        assert resumed.pause_requested_at is None
    new = _claim(job.id, "w2")
    assert new == token + 1
    with session_scope() as s:
        state = JobRepository(s).heartbeat(job.id, new, 60)
        assert state is not None
        assert not state.pause_requested


def test_find_unenqueued(session: Session, tmp_path: Path) -> None:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    now = utcnow()
    never = make_job(session, tenant.id, file.id)
    stale = make_job(session, tenant.id, file.id, enqueued_at=now - timedelta(minutes=10))
    fresh = make_job(session, tenant.id, file.id, enqueued_at=now)
    make_job(session, tenant.id, file.id, status=JobStatus.RUNNING)
    session.commit()
    with session_scope() as s:
        found = set(JobRepository(s).find_unenqueued(now - timedelta(minutes=5)))
        assert found == {never.id, stale.id}
        JobRepository(s).mark_enqueued(never.id)
    with session_scope() as s:
        assert set(JobRepository(s).find_unenqueued(now - timedelta(minutes=5))) == {stale.id}
    assert fresh.id not in found


def test_list_pagination_and_metadata_filter(session: Session, tmp_path: Path) -> None:
    tenant, _ = make_tenant(session)
    other, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    other_file = make_file(session, other.id, tmp_path)
    ids = [
        make_job(session, tenant.id, file.id, metadata_={"run": str(i % 2)}).id for i in range(5)
    ]
    make_job(session, other.id, other_file.id)
    session.commit()
    jobs = JobRepository(session)
    first = jobs.list(tenant.id, None, 2)
    assert [j.id for j in first.items] == ids[::-1][:2]
    assert first.has_more
    rest = jobs.list(tenant.id, first.items[-1].id, 10)
    assert [j.id for j in rest.items] == ids[::-1][2:]
    assert not rest.has_more
    odd = jobs.list(tenant.id, None, 10, {"run": "1"})
    assert {j.id for j in odd.items} == {ids[1], ids[3]}


def test_events_and_checkpoints_order(session: Session, tmp_path: Path, engine: Engine) -> None:
    job = _queued_job(session, tmp_path)
    with session_scope() as s:
        events = EventRepository(s)
        made = [events.append(job.id, job.tenant_id, f"e{i}") for i in range(5)]
        page = events.page(job.tenant_id, job.id, None, 2)
        assert [e.message for e in page.items] == ["e4", "e3"]
        assert page.has_more
        older = events.page(job.tenant_id, job.id, page.items[-1].id, 10)
        assert [e.message for e in older.items] == ["e2", "e1", "e0"]
        assert [e.message for e in events.since(job.id, made[2].seq)] == ["e3", "e4"]
        assert events.page("org-other", job.id, None, 10).items == []
        checkpoints = CheckpointRepository(s)
        for step in (2, 4):
            checkpoints.add(
                job_id=job.id,
                tenant_id=job.tenant_id,
                step_number=step,
                storage_path=f"artifacts/x/{step}",
                fencing_token=1,
            )
        latest = checkpoints.latest(job.id)
        assert latest is not None
        assert latest.step_number == 4
        assert latest.fine_tuned_model_checkpoint.endswith(f"{job.id}:ckpt-step-4")
        assert latest.id.startswith("ftckpt_")


def test_requeue_expired_fences_the_lost_worker(session: Session, tmp_path: Path) -> None:
    job = _queued_job(session, tmp_path)
    lost = _claim(job.id, "a", lease=-1)
    assert lost == 1
    with session_scope() as s:
        assert JobRepository(s).requeue_expired(job.id, utcnow())
    with session_scope() as s:
        jobs = JobRepository(s)
        assert jobs.requeue_expired(job.id, utcnow()) is False  # no longer leased
        assert jobs.heartbeat(job.id, lost, 60) is None
        assert jobs.find_unenqueued(utcnow()) == [job.id]
    assert _claim(job.id, "b") == 3
