"""DELETE /v1/models/{model}: a tenant deletes its own fine-tuned model (openai `models.delete`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from db.blobs import LocalBlobStore, job_artifacts_path
from db.job_status import JobStatus
from tests.api.conftest import Customer
from tests.fixtures.factories import make_adapter_job


def test_deleting_a_fine_tuned_model_removes_it_and_its_adapter_but_keeps_the_job(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job, adapter = make_adapter_job(session, alice.tenant_id, data_dir)
    kept, kept_adapter = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    model = job.fine_tuned_model
    assert model
    assert kept.fine_tuned_model
    blob = LocalBlobStore(data_dir).path_for(adapter.storage_path)
    assert blob.is_file()
    # The worker's own copies of the weights: the unpacked adapter and a checkpoint.
    workdir = data_dir / job_artifacts_path(alice.tenant_id, job.id)
    for copy in ("adapter/adapter_model.safetensors", "checkpoints/step-00000002/adapter.bin"):
        (workdir / copy).parent.mkdir(parents=True, exist_ok=True)
        (workdir / copy).write_bytes(b"weights")
    kept_workdir = data_dir / job_artifacts_path(alice.tenant_id, kept.id)
    (kept_workdir / "adapter").mkdir(parents=True)

    deleted = client.delete(f"/v1/models/{model}", headers=alice.headers)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": model, "object": "model", "deleted": True}
    listed = {m["id"] for m in client.get("/v1/models", headers=alice.headers).json()["data"]}
    assert model not in listed
    assert kept.fine_tuned_model in listed
    gone = client.get(f"/v1/models/{model}", headers=alice.headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/files/{adapter.id}/content", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/files/{adapter.id}", headers=alice.headers).status_code == 404
    assert not blob.exists()
    assert not workdir.exists()
    assert (kept_workdir / "adapter").is_dir()
    # The job's record stays readable, with its model name, report and a deletion event.
    record = client.get(f"/v1/fine_tuning/jobs/{job.id}", headers=alice.headers).json()
    assert record["status"] == "succeeded"
    assert record["fine_tuned_model"] == model
    report = client.get(f"/v1/fine_tuning/jobs/{job.id}/safety_report", headers=alice.headers)
    assert report.status_code == 200
    events = client.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=alice.headers).json()
    assert events["data"][0]["message"].startswith(f"Fine-tuned model {model} deleted")
    # The other model's adapter is untouched.
    other = client.get(f"/v1/files/{kept_adapter.id}/content", headers=alice.headers)
    assert other.status_code == 200
    assert other.content == b"PK\x03\x04 fake adapter zip bytes"

    again = client.delete(f"/v1/models/{model}", headers=alice.headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"
    assert again.json()["error"]["param"] == "model"


def test_base_models_and_unreleased_adapters_cannot_be_deleted(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    base = client.delete("/v1/models/smollm2-135m-instruct", headers=alice.headers)
    assert base.status_code == 403
    assert base.json()["error"]["code"] == "model_not_deletable"
    assert base.json()["error"]["param"] == "model"
    assert client.get("/v1/models/smollm2-135m-instruct", headers=alice.headers).status_code == 200

    # A quarantined job has no released model; its adapter stays for the provider to review.
    held, held_adapter = make_adapter_job(
        session, alice.tenant_id, data_dir, status=JobStatus.FAILED, verdict="quarantined"
    )
    session.commit()
    guessed = f"ft:{held.model}:{alice.tenant_id}:keel:{held.id}"
    response = client.delete(f"/v1/models/{guessed}", headers=alice.headers)
    assert response.status_code == 404
    assert LocalBlobStore(data_dir).path_for(held_adapter.storage_path).is_file()


def test_a_disk_error_after_the_commit_still_answers_deleted(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job, adapter = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    model = job.fine_tuned_model

    def unremovable(self: LocalBlobStore, relative: str) -> None:
        raise PermissionError(f"read-only volume: {relative}")

    # A filesystem fault is injected here (a read-only volume cannot be made as root).
    monkeypatch.setattr(LocalBlobStore, "delete_tree", unremovable)
    deleted = client.delete(f"/v1/models/{model}", headers=alice.headers)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    content = client.get(f"/v1/files/{adapter.id}/content", headers=alice.headers)
    assert content.status_code == 404
    assert client.delete(f"/v1/models/{model}", headers=alice.headers).status_code == 404
