"""The progress callback warns once, in the job's events, when SAP stays below its floor."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from sap_core.sap_strength import SAP_CORRECTION_FLOOR
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from worker.progress import DbProgressCallback


def _claimed_callback(session: Session, who: Customer, data_dir: Path) -> DbProgressCallback:
    training = make_file(session, who.tenant_id, data_dir)
    job = make_job(session, who.tenant_id, training.id)
    token = JobRepository(session).claim(job.id, "test-worker", lease_seconds=60)
    session.commit()
    assert token is not None
    return DbProgressCallback(
        job.id, who.tenant_id, token, lease_seconds=60, heartbeat_seconds=30, data_dir=data_dir
    )


def test_low_sap_correction_gives_one_warning_event(
    session: Session, alice: Customer, data_dir: Path
) -> None:
    callback = _claimed_callback(session, alice, data_dir)
    callback.on_train_start(total_steps=8)
    idle = SAP_CORRECTION_FLOOR / 100  # the reference defaults measured ~1e-6
    for step in range(1, 9):
        callback.on_step(step, 8, {"loss": 1.0, "probe_rel_norm": 1e-7, "sap_correction": idle})

    events = EventRepository(session).since(callback.job_id, after_seq=0)
    warnings = [e for e in events if e.type == "sap_strength"]
    assert len(warnings) == 1, [e.message for e in events]
    assert warnings[0].level == "warn"
    assert warnings[0].data["step"] == 3  # three low readings in a row, then once only
    metric_events = [e for e in events if e.type == "metrics"]
    assert metric_events
    assert all("probe_rel_norm" in e.data for e in metric_events)
    summary = callback.sap_strength.summary()
    assert summary.below_floor
    assert summary.measured_steps == 8


def test_working_sap_gives_no_warning(session: Session, alice: Customer, data_dir: Path) -> None:
    callback = _claimed_callback(session, alice, data_dir)
    callback.on_train_start(total_steps=6)
    for step in range(1, 7):
        callback.on_step(step, 6, {"loss": 1.0, "probe_rel_norm": 0.02, "sap_correction": 0.3})
    events = EventRepository(session).since(callback.job_id, after_seq=0)
    assert not [e for e in events if e.type == "sap_strength"]
    assert not callback.sap_strength.summary().below_floor
