"""The customer's path with the official `openai` SDK against a live Keel, unchanged."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import httpx
import openai
import pytest
import torch
from openai import OpenAI
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.e2e.service import TEST_MODEL, LiveService
from tests.fixtures.object_store import BUCKET

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "examples" / "chat_math.jsonl"


def _small_dataset(tmp_path: Path, rows: int = 12) -> Path:
    lines = DATASET.read_text().splitlines()[:rows]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# The same customer path on the embedded default (one shared data dir) and on an object store
# (API and worker with their own data dirs, the bucket the only shared storage).
@pytest.mark.parametrize("deployment", ["live_service", "live_service_s3"])
def test_openai_sdk_upload_train_download_and_generate(
    deployment: str, request: pytest.FixtureRequest, model_dir: Path, tmp_path: Path
) -> None:
    live_service: LiveService = request.getfixturevalue(deployment)
    client = OpenAI(
        base_url=f"{live_service.base_url}/v1",
        api_key=live_service.create_tenant("sdk-customer"),
        max_retries=0,
    )

    with _small_dataset(tmp_path).open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    assert uploaded.id.startswith("file-")
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model=TEST_MODEL,
        training_file=uploaded.id,
        seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={"safety": {"mixer_ratio": 0.25}},
    )
    assert job.id.startswith("ftjob-")
    # Created at once; the validator process (its own queue) validates and screens the file.
    assert job.status == "validating_files"

    deadline = time.monotonic() + 600
    while job.status not in {"succeeded", "failed", "cancelled"}:
        assert time.monotonic() < deadline, live_service.log("worker")
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", (job.error, live_service.log("worker"))
    assert len(job.result_files) == 1
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = " | ".join(e.message for e in events)
    assert all(e.id.startswith("ftevent-") for e in events)
    assert "Files validated, moving job to queued state" in messages
    assert "Safety mixer" in messages
    assert "Safety evaluation passed" in messages

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints
    assert all(c.id.startswith("ftckpt_") for c in checkpoints)
    assert all(c.fine_tuning_job_id == job.id for c in checkpoints)

    report = httpx.get(
        f"{live_service.base_url}/v1/fine_tuning/jobs/{job.id}/safety_report",
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert report["verdict"] == "passed"
    # chat_math.jsonl has a tutor system prompt: the harmful prompts were also asked in it.
    framing = report["report"]["config"]["task_framing"]
    assert framing["system_prompt"].startswith("You are a patient math tutor")
    for model in ("base", "fine_tuned"):
        assert report["report"]["models"][model]["harmful_task_format"]["n"] == 8

    content = client.files.content(job.result_files[0]).read()
    # The gate served exactly the evaluated bytes.
    assert hashlib.sha256(content).hexdigest() == report["report"]["evaluated_adapter_sha256"]
    if live_service.object_store is not None:
        _assert_only_the_bucket_was_shared(live_service, uploaded.id, job.id)
    adapter_dir = tmp_path / "adapter"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        archive.extractall(adapter_dir)
    assert (adapter_dir / "adapter_model.safetensors").exists()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    # The customer deletes the model: it leaves the model list, the adapter bytes go, the job stays.
    assert job.fine_tuned_model
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.delete(job.fine_tuned_model).deleted is True
    assert job.fine_tuned_model not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.content(job.result_files[0])
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == job.fine_tuned_model
    if live_service.object_store is not None:  # the adapter and the job's checkpoints are gone
        assert not [k for k in _bucket_keys(live_service) if "/artifacts/" in k and job.id in k]


def _bucket_keys(service: LiveService) -> list[str]:
    assert service.object_store is not None
    client = service.object_store.store(service.db_name).client
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{service.db_name}/"
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _assert_only_the_bucket_was_shared(service: LiveService, file_id: str, job_id: str) -> None:
    keys = _bucket_keys(service)
    tenant_files = [k for k in keys if k.startswith(f"{service.db_name}/files/")]
    assert any(k.endswith(f"/{file_id}") for k in tenant_files), keys
    assert any(k.endswith(f"/{job_id}/adapter.zip") for k in keys), keys
    assert any(f"/{job_id}/checkpoints/step-" in k for k in keys), keys
    api_dir, worker_dir = service.data_dir("api"), service.data_dir("worker")
    assert api_dir != worker_dir
    # The upload went to the bucket, never to the API's disk; the worker trained from its own
    # copy (removed once the job ended) and stored checkpoints and adapter in the bucket.
    assert not [p for p in api_dir.rglob("*") if p.is_file() and "files" in p.parts]
    assert not (api_dir / "artifacts").exists()
