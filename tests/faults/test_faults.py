"""Fault injection on a live Keel: real API, Celery worker, reaper, Postgres and Redis processes,
the smallest registry model, a handful of training steps.

Each scenario breaks one job once — the worker dies (``os._exit(137)``, as after SIGKILL) at a
named point of its first attempt, the worker is stopped with SIGTERM, or the database or broker
restarts mid-training — and asserts: the job ends ``succeeded``, it has exactly one adapter,
every event names the attempt it belongs to (and no step is reported twice by one attempt), and
the recovery time, which is printed at the end of the run (and appended to $KEEL_FAULT_REPORT).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import psycopg
import pytest

from tests.e2e.service import create_small_job
from tests.faults.conftest import LEASE_SECONDS, FaultService, record

# Part of `make test`; `make test-faults` runs it alone (docs/reliability.md).
pytestmark = pytest.mark.faults

ROWS = 6
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 2}
SEED = 11
TERMINAL = {"succeeded", "failed", "cancelled"}
RECONNECTED = "Connected to redis://"


def _create_job(fault: FaultService) -> str:
    return create_small_job(
        fault.client, ROWS, HYPERPARAMETERS, seed=SEED, extra={"safety": {"method": "none"}}
    )


def _status(fault: FaultService, job_id: str) -> str | None:
    """The job's status through the API; None while the API cannot answer (an outage)."""
    try:
        answer = fault.client.get(f"/v1/fine_tuning/jobs/{job_id}")
    except Exception:  # noqa: BLE001 - a refused connection during a restart
        return None
    return str(answer.json()["status"]) if answer.status_code == 200 else None


def _wait_done(fault: FaultService, job_id: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(fault, job_id)
        if status in TERMINAL:
            return status
        time.sleep(0.5)
    story = "\n".join(f"{e['at']} {e['data']} {e['message']}" for e in _db_events(fault, job_id))
    worker = fault.live.log("worker")
    raise AssertionError(f"job {job_id} not finished in {timeout:.0f} s\n{story}\n{worker}")


def _db_events(fault: FaultService, job_id: str) -> list[dict[str, object]]:
    with psycopg.connect(fault.live.database_dsn) as conn:
        rows = conn.execute(
            "SELECT created_at, type, message, data FROM job_event WHERE job_id = %s ORDER BY seq",
            (job_id,),
        ).fetchall()
    return [{"at": r[0], "type": r[1], "message": r[2], "data": r[3] or {}} for r in rows]


def _wait_event(fault: FaultService, job_id: str, kind: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not any(e["type"] == kind for e in _db_events(fault, job_id)):
        assert time.monotonic() < deadline, fault.live.log("worker")
        assert _status(fault, job_id) not in TERMINAL
        time.sleep(0.3)


def _api_events(fault: FaultService, job_id: str) -> list[dict[str, object]]:
    page = fault.client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
    assert page.status_code == 200
    return list(reversed(page.json()["data"]))


def _started_at(events: list[dict[str, object]], attempt: int) -> datetime:
    return next(
        e["at"]  # type: ignore[misc]
        for e in events
        if str(e["message"]).startswith("Job started on worker") and e["data"]["attempt"] == attempt  # type: ignore[index]
    )


def _check_outcome(fault: FaultService, job_id: str, attempts: int) -> list[dict[str, object]]:
    """Succeeded, one adapter, every event's attempt; the events (from the database)."""
    status = _wait_done(fault, job_id)
    assert status == "succeeded", fault.live.log("worker")
    job = fault.client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert len(job["result_files"]) == 1
    with psycopg.connect(fault.live.database_dsn) as conn:
        (artifacts,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM artifact WHERE job_id = %s", (job_id,)
        ).fetchone()
        (result_files,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM file WHERE job_id = %s AND purpose = 'fine-tune-results'",
            (job_id,),
        ).fetchone()
        (row_attempts,) = conn.execute(  # type: ignore[misc]
            "SELECT attempts FROM fine_tuning_job WHERE id = %s", (job_id,)
        ).fetchone()
    assert (artifacts, result_files) == (1, 1)
    assert row_attempts == attempts

    # What the customer reads: every event says which attempt it belongs to.
    api_events = _api_events(fault, job_id)
    assert all(isinstance((e["data"] or {}).get("attempt"), int) for e in api_events), api_events
    events = _db_events(fault, job_id)
    seen = [int(e["data"]["attempt"]) for e in events]  # type: ignore[index]
    assert seen == sorted(seen), "an attempt's events are never interleaved with another's"
    assert set(seen) == set(range(attempts + 1)), seen  # 0: before the first claim
    # No attempt reports the same step twice (a resumed attempt's steps are its own).
    steps = [
        (e["type"], e["data"].get("step"), e["data"]["attempt"])  # type: ignore[union-attr,index]
        for e in events
        if e["type"] in ("metrics", "checkpoint")
    ]
    assert len(steps) == len(set(steps)), steps
    return events


def _fault_time(fault: FaultService, point: str) -> float:
    lines = fault.fault_log.read_text().splitlines()
    return float(next(json.loads(x)["at"] for x in reversed(lines) if point in x))


@pytest.mark.parametrize(
    "point",
    ["during_training", "after_training", "during_evaluation", "publish_uncommitted"],
)
def test_worker_dies_at(fault_service: FaultService, point: str) -> None:
    """The worker process dies at ``point``; the reaper retakes the job when its lease ends and
    the next attempt resumes from the last checkpoint."""
    fault = fault_service
    fault.fresh_worker(point)
    started = time.monotonic()
    job_id = _create_job(fault)
    events = _check_outcome(fault, job_id, attempts=2)
    died = _fault_time(fault, point)
    recovery = _started_at(events, 2).timestamp() - died  # type: ignore[attr-defined]
    reaped = next(e["at"] for e in events if "lease expired" in str(e["message"]))
    requeued = reaped.timestamp() - died  # type: ignore[attr-defined]
    resumed = [e for e in events if e["type"] == "resume"]
    assert len(resumed) == 1
    if point != "during_training":
        # Trained to the end on attempt 1: the last step's checkpoint means no step is redone.
        assert not [
            e
            for e in events
            if e["type"] == "metrics" and e["data"]["attempt"] == 2  # type: ignore[index]
        ]
    # Back in the queue within the lease (counted from the last heartbeat, ≤ 1 s before the
    # death) plus one reaper pass and a little slack. The claim after that is a fresh pool
    # child's start (fork, importing torch), which a busy machine can stretch to minutes.
    assert requeued < LEASE_SECONDS + 1 + 10, requeued
    record(
        {
            "scenario": f"worker dies {point}",
            "requeued_s": round(requeued, 1),
            "recovery_s": round(recovery, 1),
            "job_s": round(time.monotonic() - started, 1),
        }
    )


def test_sigterm_checkpoints_releases_and_the_next_worker_resumes_at_once(
    fault_service: FaultService,
) -> None:
    """SIGTERM during training, then again during evaluation: each time the worker stops within
    the supervisor's grace period, the job goes back to the queue, and the next worker takes it
    without waiting for the lease."""
    fault = fault_service
    fault.fresh_worker()
    started = time.monotonic()
    job_id = _create_job(fault)
    timings: dict[str, float] = {}
    for attempt, phase_event in ((1, "checkpoint"), (2, "evaluation")):
        _wait_event(fault, job_id, phase_event)  # attempt 1 never reaches evaluation
        stopped_in = fault.live.terminate("worker")
        assert stopped_in < 20, f"shutdown took {stopped_in:.1f} s (supervisor grace: 20 s)"
        assert _status(fault, job_id) == "queued"
        events = _db_events(fault, job_id)
        assert events[-1]["data"].get("reason") == "worker_shutdown"  # type: ignore[union-attr]
        assert events[-1]["data"]["attempt"] == attempt  # type: ignore[index]
        restarted = time.time()
        fault.fresh_worker()
        deadline = time.monotonic() + 420
        while not any(
            str(e["message"]).startswith("Job started on worker")
            and e["data"]["attempt"] == attempt + 1  # type: ignore[index]
            for e in _db_events(fault, job_id)
        ):
            assert time.monotonic() < deadline, fault.live.log("worker")
            time.sleep(0.3)
        claimed = _started_at(_db_events(fault, job_id), attempt + 1).timestamp()  # type: ignore[attr-defined]
        timings[f"shutdown_{phase_event}_s"] = round(stopped_in, 1)
        timings[f"requeue_to_claim_{phase_event}_s"] = round(claimed - restarted, 1)
        # Handed over, not reaped: no lease expired (the time is a worker's start: Celery,
        # then a pool child importing torch, which on a busy machine takes tens of seconds).
        assert not any("lease expired" in str(e["message"]) for e in _db_events(fault, job_id))
    events = _check_outcome(fault, job_id, attempts=3)
    assert not any("lease expired" in str(e["message"]) for e in events)
    record(
        {"scenario": "SIGTERM in training, then in evaluation", **timings}
        | {"job_s": round(time.monotonic() - started, 1)}
    )


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_backend_restart_mid_training(fault_service: FaultService, backend: str) -> None:
    """The broker or the database goes away for 2 s mid-training and comes back (a restart,
    a failover): the job carries on and succeeds."""
    fault = fault_service
    fault.fresh_worker()
    started = time.monotonic()
    job_id = _create_job(fault)
    _wait_event(fault, job_id, "checkpoint")
    connected = fault.live.full_log("worker").count(RECONNECTED)
    if backend == "redis":
        fault.broker.restart(down_for=2)
    else:
        fault.database.restart(down_for=2)
    back = time.time()
    # Recovery: for the broker, until the worker's consumer is connected again (it needs
    # Redis only to receive work); for the database, until the job's next heartbeat.
    deadline = time.monotonic() + 60
    recovered: float | None = None
    while backend == "redis" and recovered is None and time.monotonic() < deadline:
        if fault.live.full_log("worker").count(RECONNECTED) > connected:
            recovered = time.time() - back
        time.sleep(0.2)
    while recovered is None and time.monotonic() < deadline:
        try:
            with psycopg.connect(fault.live.database_dsn) as conn:
                (beat,) = conn.execute(  # type: ignore[misc]
                    "SELECT heartbeat_at FROM fine_tuning_job WHERE id = %s", (job_id,)
                ).fetchone()
        except psycopg.OperationalError:
            beat = None
        if beat is not None and beat.timestamp() > back:
            recovered = beat.timestamp() - back
        elif _status(fault, job_id) in TERMINAL:
            recovered = 0.0
        time.sleep(0.2)
    assert recovered is not None, fault.live.log("worker")
    events = _check_outcome(fault, job_id, attempts=1)
    assert events
    record(
        {
            "scenario": f"{backend} restart mid-training (2 s down)",
            "recovery_s": round(recovered, 1),
            "job_s": round(time.monotonic() - started, 1),
        }
    )
