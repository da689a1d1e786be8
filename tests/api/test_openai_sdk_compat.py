"""The official `openai` SDK, unchanged, against the app (in-process transport, no server)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from openai import OpenAI
from sqlalchemy.orm import Session

from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl, make_adapter_job
from worker.validation import validate_job

ADAPTER = b"PK\x03\x04 sdk adapter"


def test_sdk_round_trip(
    client: TestClient, session: Session, alice: Customer, data_dir: Path, enqueued: list[str]
) -> None:
    sdk = OpenAI(
        base_url="http://testserver/v1", api_key=alice.key, http_client=client, max_retries=0
    )
    uploaded = sdk.files.create(file=("train.jsonl", chat_jsonl(4)), purpose="fine-tune")
    assert sdk.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert [f.id for f in sdk.files.list()] == [uploaded.id]

    job = sdk.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 1},
        extra_body={"safety": {"mixer_ratio": 0.25}},
    )
    assert job.status == "validating_files"  # the files are validated off the request path
    assert enqueued == []
    validate_job(job.id)  # what the validation worker does
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert enqueued == [job.id]
    assert sdk.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [j.id for j in sdk.fine_tuning.jobs.list()] == [job.id]
    events = list(sdk.fine_tuning.jobs.list_events(job.id, limit=2))
    assert len(events) == 3
    assert events[0].message.startswith("Files validated")
    assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"

    done, result = make_adapter_job(session, alice.tenant_id, data_dir, adapter=ADAPTER)
    session.commit()
    checkpoints = list(sdk.fine_tuning.jobs.checkpoints.list(done.id))
    assert [c.step_number for c in checkpoints] == [2]
    assert sdk.files.content(result.id).read() == ADAPTER
    model_ids = [m.id for m in sdk.models.list()]
    assert done.fine_tuned_model in model_ids
    assert done.fine_tuned_model is not None
    assert sdk.models.retrieve(done.fine_tuned_model).owned_by == alice.tenant_id
    assert sdk.models.delete(done.fine_tuned_model).deleted is True
    assert done.fine_tuned_model not in [m.id for m in sdk.models.list()]
    assert sdk.files.delete(uploaded.id).deleted is True
