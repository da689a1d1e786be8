"""The policy's training deadline through run_job: the job ends failed with
training_deadline_exceeded, its checkpoint row and files kept (tiny model, real Postgres)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.job_status import JobStatus
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from tests.fixtures.tiny_model import make_tiny_model_dir
from tests.worker.test_recipe import POLICY
from worker import pipeline
from worker.runner import run_job
from worker.settings import WorkerSettings


def test_a_job_past_its_training_deadline_fails_and_keeps_its_checkpoint(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny = make_tiny_model_dir(tmp_path / "model")
    monkeypatch.setattr(pipeline, "_ensure_model", lambda name, cache_dir, say: tiny)
    training = POLICY.training.model_copy(
        update={"max_training_seconds": 0.001, "checkpoint_every": 100}
    )
    PolicyRepository(session).set(
        POLICY.model_copy(
            update={"allowed_models": ["smollm2-135m-instruct"], "training": training}
        )
    )
    file = make_file(session, alice.tenant_id, data_dir)
    job = make_job(session, alice.tenant_id, file.id, status=JobStatus.QUEUED)
    session.commit()

    run_job(job.id, WorkerSettings(data_dir=data_dir, corpus_dir=tmp_path / "corpus", device="cpu"))

    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert (stored.status, stored.error_code) == ("failed", "training_deadline_exceeded")
        assert "training.max_training_seconds" in (stored.error_message or "")
        checkpoint = CheckpointRepository(s).latest(job.id)
        assert checkpoint is not None
        assert checkpoint.step_number == 1
        assert (data_dir / checkpoint.storage_path / "adapter").is_dir()
    events = client.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=alice.headers).json()
    messages = [e["message"] for e in events["data"]]
    assert any("Checkpoint saved at step 1" in m for m in messages)
    assert any("training_deadline" in m or "max_training_seconds" in m for m in messages)
