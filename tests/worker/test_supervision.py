"""Supervision pieces on real Postgres and Redis: the reaper enqueues once, a graceful release,
every event's attempt, the checkpoint policy by time, SIGTERM handling, the fault hook's gate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import FineTuningJob, JobEvent
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.session import session_scope
from tests.fixtures.factories import make_file, make_job, make_tenant
from worker.progress import DbProgressCallback
from worker.queue import GPU_QUEUE
from worker.reaper import reap_once
from worker.settings import WorkerSettings
from worker.shutdown import GracefulShutdown, ShutdownRequested

ROOT = Path(__file__).resolve().parents[2]


def _job(session: Session, tmp_path: Path) -> FineTuningJob:
    tenant, _ = make_tenant(session)
    file = make_file(session, tenant.id, tmp_path)
    job = make_job(session, tenant.id, file.id)
    session.commit()
    return job


def _claim(job_id: str, lease: int = 60) -> int:
    with session_scope() as s:
        token = JobRepository(s).claim(job_id, "w1", lease)
    assert token is not None
    return token


@pytest.fixture
def broker(keel_env: dict[str, str]) -> redis.Redis:
    """The test Redis database the producer sends to, emptied."""
    client = redis.Redis.from_url(keel_env["KEEL_BROKER_URL"])
    client.flushdb()
    return client


def test_reaper_enqueues_a_recovered_job_exactly_once(
    session: Session, tmp_path: Path, broker: redis.Redis
) -> None:
    job = _job(session, tmp_path)
    _claim(job.id, lease=-1)  # its worker died: the lease is already over
    requeued = reap_once(WorkerSettings(requeue_after_seconds=300))
    assert requeued == [job.id]
    assert broker.llen(GPU_QUEUE) == 1  # one task message, not two
    assert reap_once(WorkerSettings(requeue_after_seconds=300)) == []  # marked enqueued
    assert broker.llen(GPU_QUEUE) == 1


def test_release_queues_the_job_for_an_immediate_claim(session: Session, tmp_path: Path) -> None:
    job = _job(session, tmp_path)
    token = _claim(job.id)
    with session_scope() as s:
        assert JobRepository(s).release(job.id, token)
    with session_scope() as s:
        jobs = JobRepository(s)
        assert jobs.release(job.id, token) is False  # no longer held
        row = jobs.get_unscoped(job.id)
        assert row is not None
        assert (row.status, row.lease_owner, row.enqueued_at) == ("queued", None, None)
        # Found by the reaper's lost-enqueue scan at once, not after a lease expiry.
        assert jobs.find_unenqueued(utcnow() - timedelta(seconds=300)) == [job.id]
    second = _claim(job.id)  # no waiting for any lease
    assert second == token + 1
    with session_scope() as s:
        row = JobRepository(s).get_unscoped(job.id)
        assert row is not None
        assert row.attempts == 2


def test_every_event_carries_its_attempt(session: Session, tmp_path: Path) -> None:
    job = _job(session, tmp_path)
    with session_scope() as s:
        EventRepository(s).append(job.id, job.tenant_id, "Created")  # API side, unclaimed
    _claim(job.id)
    with session_scope() as s:
        EventRepository(s).append(job.id, job.tenant_id, "Pause requested", data={"x": 1})
        EventRepository(s).append(job.id, job.tenant_id, "from a worker", attempt=7)
    with session_scope() as s:
        rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq))
        data = [row.data for row in rows]
    assert data == [{"attempt": 0}, {"x": 1, "attempt": 1}, {"attempt": 7}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _callback(
    job: FineTuningJob, token: int, clock: FakeClock, tmp_path: Path
) -> DbProgressCallback:
    return DbProgressCallback(
        job.id,
        job.tenant_id,
        token,
        lease_seconds=60,
        heartbeat_seconds=5,
        data_dir=tmp_path,
        attempt=1,
        checkpoint_every_seconds=120,
        clock=clock,
    )


def test_checkpoint_policy_by_time_and_at_the_last_step(session: Session, tmp_path: Path) -> None:
    job = _job(session, tmp_path)
    token = _claim(job.id)
    clock = FakeClock()
    callback = _callback(job, token, clock, tmp_path)
    callback.on_train_start(5)
    callback.on_step(1, 5, {})
    assert callback.should_stop() is None
    clock.now += 119
    callback.on_step(2, 5, {})
    assert callback.should_stop() is None
    clock.now += 2  # 121 s since training started: a checkpoint, though n-steps says none
    assert callback.should_stop() == "checkpoint"
    checkpoint = tmp_path / "ckpt-2"
    checkpoint.mkdir()
    callback.on_checkpoint(2, checkpoint)
    assert callback.should_stop() is None  # this step has one now
    callback.on_step(3, 5, {})
    assert callback.should_stop() is None  # the interval starts again at the checkpoint
    callback.on_step(5, 5, {})
    assert callback.should_stop() == "checkpoint"  # the last step always gets one
    with session_scope() as s:
        events = list(s.scalars(select(JobEvent).where(JobEvent.type == "checkpoint")))
    assert [e.data for e in events] == [
        {"step": 2, "checkpoint_id": events[0].data["checkpoint_id"], "attempt": 1}
    ]


def test_a_requested_shutdown_stops_training_and_wins_over_checkpoints(
    session: Session, tmp_path: Path
) -> None:
    job = _job(session, tmp_path)
    token = _claim(job.id)
    callback = _callback(job, token, FakeClock(), tmp_path)
    callback.shutdown = GracefulShutdown(lambda: callback.phase)
    callback.on_train_start(5)
    callback.on_step(5, 5, {})
    callback.shutdown.requested = True
    assert callback.should_stop() == "shutdown"
    # Training is over and the job moves on: the shutdown takes effect at the phase change.
    with pytest.raises(ShutdownRequested):
        callback.heartbeat({"phase": "evaluating"})


def test_sigterm_waits_for_the_step_in_training_and_interrupts_elsewhere() -> None:
    phase = {"now": "training"}
    graceful = GracefulShutdown(lambda: phase["now"])
    with graceful.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        assert graceful.requested  # only a flag: the trainer stops at the step boundary
    phase["now"] = "evaluating"
    graceful = GracefulShutdown(lambda: phase["now"])

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill() returns here

    with graceful.installed(), pytest.raises(ShutdownRequested):
        terminate()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize(("env", "code"), [("testing", 137), ("production", 0)])
def test_fault_hook_only_outside_production(env: str, code: int) -> None:
    script = "from worker.faults import maybe_die; maybe_die('after_training', 1)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "KEEL_ENV": env, "KEEL_FAULT_POINT": "after_training"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == code, result.stderr
    again = subprocess.run(
        [sys.executable, "-c", script.replace("1)", "2)")],  # a later attempt runs through
        cwd=ROOT,
        env={**os.environ, "KEEL_ENV": env, "KEEL_FAULT_POINT": "after_training"},
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 0


def test_graceful_releases_do_not_count_towards_giving_up(
    session: Session, tmp_path: Path, broker: redis.Redis
) -> None:
    job = _job(session, tmp_path)
    settings = WorkerSettings(max_attempts=3)
    for _ in range(2):  # two deploys while it trained
        token = _claim(job.id)
        with session_scope() as s:
            assert JobRepository(s).release(job.id, token)
    _claim(job.id, lease=-1)  # attempt 3 is lost once: retaken, not given up
    assert reap_once(settings) == [job.id]
    for _ in range(2):  # lost twice more: the third loss gives up
        _claim(job.id, lease=-1)
        reap_once(settings)
    with session_scope() as s:
        row = JobRepository(s).get_unscoped(job.id)
        assert row is not None
        assert (row.status, row.error_code, row.attempts) == ("failed", "worker_lost", 5)
