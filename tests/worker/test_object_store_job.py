"""run_job on an object store (a real S3 server): two workers with different data dirs share
only the bucket; the second resumes from the checkpoint the first stored, and stores the adapter
the gate then serves (tiny real-architecture model, real Postgres)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.blobs_s3 import TREE_MARKER
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.policy_schema import PolicyDocument
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from tests.fixtures.object_store import BUCKET, ObjectStoreServer
from tests.fixtures.tiny_model import make_tiny_model_dir
from tests.worker.test_recipe import POLICY
from worker import pipeline
from worker.runner import run_job
from worker.settings import WorkerSettings


def _policy(**training: object) -> PolicyDocument:
    return POLICY.model_copy(
        update={
            "allowed_models": ["smollm2-135m-instruct"],
            "training": POLICY.training.model_copy(update={"checkpoint_every": 1, **training}),
            # Any verdict but "failed" stores the adapter: the tiny model may well be quarantined.
            "gate": POLICY.gate.model_copy(update={"on_failure": "quarantine"}),
        }
    )


def test_a_job_resumes_on_another_worker_from_the_bucket(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    object_store: ObjectStoreServer,
) -> None:
    tiny = make_tiny_model_dir(tmp_path / "model")
    monkeypatch.setattr(pipeline, "_ensure_model", lambda name, cache_dir, say: tiny)
    prefix = f"job-{uuid.uuid4().hex[:8]}"
    store = object_store.store(prefix)
    env = object_store.env(prefix)

    def worker(name: str) -> WorkerSettings:
        return WorkerSettings(
            data_dir=tmp_path / name,
            corpus_dir=tmp_path / "corpus",
            device="cpu",
            blob_url=env["KEEL_BLOB_URL"],
            s3_endpoint_url=env["KEEL_S3_ENDPOINT_URL"],
            s3_access_key_id=env["KEEL_S3_ACCESS_KEY_ID"],
            s3_secret_access_key=env["KEEL_S3_SECRET_ACCESS_KEY"],  # type: ignore[arg-type]
        )

    # Attempt 1 stops right after its first checkpoint (the policy's training deadline).
    PolicyRepository(session).set(_policy(max_training_seconds=0.001))
    file = make_file(session, alice.tenant_id, data_dir, store=store)
    job = make_job(session, alice.tenant_id, file.id, status=JobStatus.QUEUED)
    session.commit()
    run_job(job.id, worker("worker-a"))

    with session_scope() as s:
        checkpoint = CheckpointRepository(s).latest(job.id)
        assert checkpoint is not None
        assert checkpoint.step_number == 1
        stored_checkpoint = checkpoint.storage_path
    store.read_bytes(f"{stored_checkpoint}/{TREE_MARKER}")  # stored whole, marker last
    job_dir = Path("artifacts") / alice.tenant_id / job.id
    assert not (tmp_path / "worker-a" / job_dir).exists()  # working copies dropped

    # As after a crash: the lease has expired, another worker may claim the job.
    PolicyRepository(session).set(_policy())
    session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job.id)
        .values(
            status=JobStatus.RUNNING.value,
            lease_expires_at=utcnow() - timedelta(minutes=1),
            error_code=None,
            error_message=None,
            finished_at=None,
        )
    )
    session.commit()
    run_job(job.id, worker("worker-b"))

    events = client.get(
        f"/v1/fine_tuning/jobs/{job.id}/events", headers=alice.headers, params={"limit": 100}
    ).json()
    messages = [e["message"] for e in events["data"]]
    assert "Resuming from checkpoint at step 1" in messages, messages
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert stored.attempts == 2
        assert stored.status in ("succeeded", "failed"), stored.error_message
        assert stored.error_code in (None, "safety_evaluation_quarantined"), stored.error_message
        report = SafetyReportRepository(s).get(alice.tenant_id, job.id)
        assert report is not None
        evaluated = report.evaluated_sha256
    adapter = store.read_bytes(f"artifacts/{alice.tenant_id}/{job.id}/adapter.zip")
    assert hashlib.sha256(adapter).hexdigest() == evaluated
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/artifacts/")
    assert any("/checkpoints/step-" in o["Key"] for o in listed["Contents"])
    # Neither worker wrote into the API's data dir; both dropped their copies at the end.
    assert not (data_dir / "artifacts").exists()
    assert not (tmp_path / "worker-b" / job_dir).exists()
