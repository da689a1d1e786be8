"""The adapter download gate: succeeded ∧ (passed ∨ released quarantine) ∧ sha256 matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.job_status import JobStatus
from db.models import FineTuningJob
from tests.api.conftest import Customer
from tests.fixtures.factories import make_adapter_job

ADAPTER = b"PK\x03\x04 adapter bytes"


def _content(client: TestClient, who: Customer, file_id: str) -> object:
    return client.get(f"/v1/files/{file_id}/content", headers=who.headers)


def test_passed_and_succeeded_downloads_exact_bytes(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _, result = make_adapter_job(session, alice.tenant_id, data_dir, adapter=ADAPTER)
    session.commit()
    response = _content(client, alice, result.id)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.content == ADAPTER  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "verdict", "expected"),
    [
        (JobStatus.RUNNING, "passed", 409),
        (JobStatus.FAILED, "failed", 409),
        (JobStatus.SUCCEEDED, "failed", 403),
        (JobStatus.SUCCEEDED, "error", 403),
        (JobStatus.FAILED, "quarantined", 409),
    ],
)
def test_withheld(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    status: JobStatus,
    verdict: str,
    expected: int,
) -> None:
    _, result = make_adapter_job(session, alice.tenant_id, data_dir, status=status, verdict=verdict)
    session.commit()
    response = _content(client, alice, result.id)
    assert response.status_code == expected  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == "adapter_withheld"  # type: ignore[attr-defined]


def test_sha256_mismatch_is_withheld(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _, result = make_adapter_job(session, alice.tenant_id, data_dir, adapter=ADAPTER)
    session.commit()
    # A stale worker overwrote the evaluated adapter after the gate passed.
    (data_dir / result.storage_path).write_bytes(b"PK\x03\x04 swapped bytes")
    response = _content(client, alice, result.id)
    assert response.status_code == 409  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == "adapter_withheld"  # type: ignore[attr-defined]
    assert b"swapped" not in response.content  # type: ignore[attr-defined]


def test_quarantine_downloadable_only_after_admin_release(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    admin_headers: dict[str, str],
) -> None:
    job, result = make_adapter_job(
        session,
        alice.tenant_id,
        data_dir,
        status=JobStatus.FAILED,
        verdict="quarantined",
        adapter=ADAPTER,
    )
    session.commit()
    assert _content(client, alice, result.id).status_code == 409  # type: ignore[attr-defined]
    denied = client.post(f"/admin/v1/fine_tuning/jobs/{job.id}/release", headers=alice.headers)
    assert denied.status_code == 401
    released = client.post(f"/admin/v1/fine_tuning/jobs/{job.id}/release", headers=admin_headers)
    assert released.status_code == 200
    assert released.json()["released"] is True
    retrieved = client.get(f"/v1/fine_tuning/jobs/{job.id}", headers=alice.headers).json()
    assert retrieved["status"] == "succeeded"
    assert retrieved["error"] is None
    assert retrieved["fine_tuned_model"] is not None
    response = _content(client, alice, result.id)
    assert response.status_code == 200
    assert response.content == ADAPTER


def test_release_refuses_a_non_quarantined_job(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    admin_headers: dict[str, str],
) -> None:
    job, _ = make_adapter_job(
        session, alice.tenant_id, data_dir, status=JobStatus.FAILED, verdict="failed"
    )
    session.commit()
    response = client.post(f"/admin/v1/fine_tuning/jobs/{job.id}/release", headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_quarantined"
    stored = session.get(FineTuningJob, job.id, populate_existing=True)
    assert stored is not None
    assert stored.status == "failed"
