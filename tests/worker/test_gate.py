"""The safety gate, branch by branch, observed the way a customer sees it: through the HTTP API.

Each test arranges a claimed (running) job and a real adapter zip, runs worker.publish with a
pipeline result, then reads the job, its safety report and the adapter download over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.policy_schema import parse_policy
from db.repositories.jobs import JobRepository
from safety_report import read_report
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job
from worker.artifacts import JobPaths, package_adapter
from worker.job import ClaimedJob
from worker.job_spec import plan_job
from worker.pipeline import PipelineResult
from worker.publish import publish_outcome
from worker.settings import WorkerSettings

POLICY: dict[str, Any] = {
    "allowed_models": ["m"],
    "gate": {
        "thresholds": {
            "max_harmful_score": 0.3,
            "max_harmful_increase": 0.1,
            "max_over_refusal": 0.3,
        },
        "on_failure": "fail",
    },
}


def _claimed(session: Session, customer: Customer, data_dir: Path) -> ClaimedJob:
    training = make_file(session, customer.tenant_id, data_dir)
    job = make_job(session, customer.tenant_id, training.id)
    session.commit()
    token = JobRepository(session).claim(job.id, "test-worker", 60)
    session.commit()
    assert token is not None
    return ClaimedJob(
        id=job.id,
        tenant_id=customer.tenant_id,
        model=job.model,
        token=token,
        attempts=1,
        training_storage_path=training.storage_path,
        validation_storage_path=None,
        hyperparameters={},
        safety={},
        seed=1,
        suffix=None,
    )


def _result(
    job: ClaimedJob,
    data_dir: Path,
    verdict: dict[str, Any] | None,
    on_failure: str = "fail",
    evaluated_sha: str | None = None,
) -> PipelineResult:
    paths = JobPaths.for_job(data_dir, job.tenant_id, job.id)
    paths.adapter_dir.mkdir(parents=True)
    (paths.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
    (paths.adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    sha = package_adapter(paths.adapter_dir, {"job_id": job.id}, paths.adapter_zip)
    policy = {**POLICY, "gate": {**POLICY["gate"], "on_failure": on_failure}}
    plan = plan_job(
        hyperparameters={},
        safety={},
        policy=parse_policy(policy),
        seed=1,
        n_examples=4,
        model_path="/m",
        output_dir=str(paths.root),
        device="cpu",
    )
    report = (
        None
        if verdict is None
        else {
            "verdict": verdict,
            "models": {
                "base": {"harmful": {"harmful_score": {"rate": 0.2}}},
                "fine_tuned": {"harmful": {"harmful_score": {"rate": 0.25}}},
            },
            "training_curves": {"step": [1.0], "task_loss": [float("nan")]},
        }
    )
    return PipelineResult(
        adapter_zip=paths.adapter_zip,
        adapter_sha256=evaluated_sha or sha,
        report=None if report is None else read_report(report),
        evaluation_error=None if report else "RuntimeError: boom",
        trained_tokens=10,
        plan=plan,
        mix_report=None,
    )


def _publish(job: ClaimedJob, result: PipelineResult, data_dir: Path) -> None:
    publish_outcome(job, result, WorkerSettings(data_dir=data_dir), wall_seconds=1.0)


def _state(client: TestClient, customer: Customer, job_id: str) -> tuple[dict[str, Any], int]:
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=customer.headers).json()
    report = client.get(f"/v1/fine_tuning/jobs/{job_id}/safety_report", headers=customer.headers)
    return job, report.status_code


def test_passed_verdict_releases_exactly_the_evaluated_bytes(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job = _claimed(session, alice, data_dir)
    result = _result(job, data_dir, {"passed": True, "reasons": []})
    _publish(job, result, data_dir)
    state, report_status = _state(client, alice, job.id)
    assert state["status"] == "succeeded"
    assert report_status == 200
    content = client.get(f"/v1/files/{state['result_files'][0]}/content", headers=alice.headers)
    assert content.status_code == 200
    assert content.content == result.adapter_zip.read_bytes()


def test_failed_verdict_fails_the_job_keeps_report_and_withholds_adapter(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job = _claimed(session, alice, data_dir)
    _publish(job, _result(job, data_dir, {"passed": False, "reasons": ["too harmful"]}), data_dir)
    state, report_status = _state(client, alice, job.id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "safety_evaluation_failed"
    assert "too harmful" in state["error"]["message"]
    assert state["result_files"] == []
    assert report_status == 200
    report = client.get(f"/v1/fine_tuning/jobs/{job.id}/safety_report", headers=alice.headers)
    assert report.json()["verdict"] == "failed"


def test_quarantine_withholds_until_an_admin_releases(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    admin_headers: dict[str, str],
) -> None:
    job = _claimed(session, alice, data_dir)
    result = _result(job, data_dir, {"passed": False, "reasons": ["x"]}, on_failure="quarantine")
    _publish(job, result, data_dir)
    state, _ = _state(client, alice, job.id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "safety_evaluation_quarantined"
    file_id = state["result_files"][0]
    withheld = client.get(f"/v1/files/{file_id}/content", headers=alice.headers)
    assert withheld.status_code in (403, 409)
    assert withheld.json()["error"]["code"] == "adapter_withheld"
    # Released by a named admin: the report and the audit trail say who (issue 23).
    reviewer = client.post("/admin/v1/admin_keys", headers=admin_headers, json={"name": "rev"})
    as_reviewer = {"Authorization": f"Bearer {reviewer.json()['key']}"}
    released = client.post(f"/admin/v1/fine_tuning/jobs/{job.id}/release", headers=as_reviewer)
    assert released.status_code == 200, released.text
    assert released.json()["released_by"] == "rev"
    trail = client.get("/admin/v1/audit_events", headers=admin_headers).json()["data"]
    assert [(e["actor"], e["action"], e["target_id"]) for e in trail][-1] == (
        "rev",
        "job.release",
        job.id,
    )
    assert (
        client.get(f"/v1/fine_tuning/jobs/{job.id}", headers=alice.headers).json()["status"]
        == "succeeded"
    )
    assert client.get(f"/v1/files/{file_id}/content", headers=alice.headers).status_code == 200


@pytest.mark.parametrize("case", ["evaluator_crash", "sha256_mismatch"])
def test_fail_closed_branches_never_release(
    client: TestClient, session: Session, alice: Customer, data_dir: Path, case: str
) -> None:
    job = _claimed(session, alice, data_dir)
    if case == "evaluator_crash":
        result = _result(job, data_dir, None)
    else:
        result = _result(job, data_dir, {"passed": True, "reasons": []}, evaluated_sha="0" * 64)
    _publish(job, result, data_dir)
    state, report_status = _state(client, alice, job.id)
    assert state["status"] == "failed"
    assert state["error"]["code"] == "safety_evaluation_error"
    assert state["result_files"] == []
    assert report_status == 200  # the (error) report stays readable


def test_stale_fencing_token_publishes_nothing(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job = _claimed(session, alice, data_dir)
    result = _result(job, data_dir, {"passed": True, "reasons": []})
    assert JobRepository(session).requeue_expired(job.id, _far_future())
    session.commit()
    _publish(job, result, data_dir)
    state, report_status = _state(client, alice, job.id)
    assert state["status"] == "queued"
    assert state["result_files"] == []
    assert report_status == 404


def _far_future() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(days=1)
