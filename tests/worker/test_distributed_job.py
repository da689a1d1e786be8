"""A job with n_processes = 2 through run_job (real Postgres), one rank killed mid-training.

Tiny random real-architecture model (tests.fixtures.tiny_model: 2-layer Llama with a real BPE
tokenizer), two Gloo ranks under torchrun on the CPU; plumbing only, never safety claims. The
mixer, the tokenisation and the safety evaluation run once, in the worker; only the training
loop runs in the ranks, whose rank 0 reports to the worker's callback. (The sap_core-level
equivalence and resume checks are tests/worker/test_distributed_training.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.job_status import JobStatus
from db.policy_schema import PolicyDocument
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.session import session_scope
from sap_core.trainer import SafetyAwareTrainer
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from tests.fixtures.tiny_model import make_tiny_model_dir
from tests.worker.test_recipe import POLICY
from worker import pipeline
from worker.reaper import RANK_LOST
from worker.runner import run_job
from worker.settings import WorkerSettings

pytestmark = pytest.mark.distributed


def _two_process_policy(**training: object) -> PolicyDocument:
    limits = {"max_processes": 2, "default_processes": 2, **training}
    return POLICY.model_copy(
        update={
            "allowed_models": ["smollm2-135m-instruct", "tiny"],
            "training": POLICY.training.model_copy(update=limits),
            # Any verdict but "failed" stores the adapter: the tiny model may well be quarantined.
            "gate": POLICY.gate.model_copy(update={"on_failure": "quarantine"}),
        }
    )


def test_a_killed_rank_requeues_the_job_which_resumes_and_succeeds_with_one_adapter(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    enqueued: list[str],
) -> None:
    tiny = make_tiny_model_dir(tmp_path / "model")
    monkeypatch.setattr(pipeline, "_ensure_model", lambda name, cache_dir, say: tiny)
    monkeypatch.setattr("worker.runner.enqueue_fine_tuning_job", enqueued.append)
    built: list[int] = []
    original = SafetyAwareTrainer.__init__

    def counting_init(self: SafetyAwareTrainer, *args: object, **kwargs: object) -> None:
        built.append(1)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SafetyAwareTrainer, "__init__", counting_init)
    # Rank 1 dies (os._exit(137), as if SIGKILLed) after step 2 of attempt 1 only.
    for name, value in {
        "KEEL_ENV": "testing",
        "KEEL_FAULT_POINT": "rank_during_training",
        "KEEL_FAULT_RANK": "1",
        "KEEL_FAULT_STEP": "2",
    }.items():
        monkeypatch.setenv(name, value)
    PolicyRepository(session).set(_two_process_policy(checkpoint_every=1))
    file = make_file(session, alice.tenant_id, data_dir)
    job = make_job(session, alice.tenant_id, file.id, status=JobStatus.QUEUED)
    session.commit()
    settings = WorkerSettings(data_dir=data_dir, corpus_dir=tmp_path / "corpus", device="cpu")

    run_job(job.id, settings)
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert (stored.status, stored.lease_owner) == ("queued", None)  # back in the queue
        assert EventRepository(s).count_with_reason(job.id, RANK_LOST) == 1
        checkpoint = CheckpointRepository(s).latest(job.id)
        assert checkpoint is not None
        resumed_from = checkpoint.step_number
        assert resumed_from >= 1
    assert enqueued == [job.id]  # at once, not after a lease expiry

    run_job(job.id, settings)  # the next delivery: attempt 2
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job.id)
        assert stored is not None
        assert stored.status in ("succeeded", "failed"), stored.error_message
        assert stored.attempts == 2
        assert stored.error_code in (None, "safety_evaluation_quarantined"), stored.error_message
        assert len(stored.result_files or []) == 1  # one adapter
        report = SafetyReportRepository(s).get(alice.tenant_id, job.id)
        assert report is not None  # evaluated once, in the worker, on the saved adapter
        assert report.evaluated_sha256
        # The per-step history came back from rank 0: the report says how strong SAP was.
        assert (report.report.get("sap_strength") or {}).get("measured_steps")
    assert built == []  # no trainer in the worker process: the ranks trained
    events = client.get(
        f"/v1/fine_tuning/jobs/{job.id}/events", headers=alice.headers, params={"limit": 100}
    ).json()
    messages = [e["message"] for e in events["data"]]
    assert any(f"Resuming from checkpoint at step {resumed_from}" in m for m in messages)
    assert any("A training process died" in m for m in messages)
    assert any("Training on 2 processes (Gloo" in m for m in messages)
