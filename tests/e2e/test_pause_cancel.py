"""Pause, resume and cancel are cooperative flags the training loop honours (live service)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from openai import OpenAI

from tests.e2e.service import TEST_MODEL, LiveService, wait_for_status

ROOT = Path(__file__).resolve().parents[2]


def _start_job(live: LiveService, name: str, rows: int) -> tuple[httpx.Client, OpenAI, str]:
    key = live.create_tenant(name)
    http = httpx.Client(
        base_url=live.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    sdk = OpenAI(base_url=f"{live.base_url}/v1", api_key=key, max_retries=0)
    lines = (ROOT / "examples" / "chat_math.jsonl").read_text().splitlines()[:rows]
    upload = sdk.files.create(
        file=("train.jsonl", "\n".join(lines).encode() + b"\n"), purpose="fine-tune"
    )
    job = sdk.fine_tuning.jobs.create(
        model=TEST_MODEL,
        training_file=upload.id,
        seed=2,
        hyperparameters={"n_epochs": 1, "batch_size": 2},
    )
    return http, sdk, job.id


def _wait_for_event(http: httpx.Client, job_id: str, kind: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
        if any(event["type"] == kind for event in page["data"]):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no {kind} event for {job_id}")


def test_pause_then_resume_continues_from_the_checkpoint(live_service: LiveService) -> None:
    http, sdk, job_id = _start_job(live_service, "pausing-customer", rows=16)
    _wait_for_event(http, job_id, "checkpoint")
    assert sdk.fine_tuning.jobs.pause(job_id).status in {"pausing", "paused", "running"}
    paused = wait_for_status(http, job_id, {"paused", "succeeded", "failed"}, timeout=300)
    assert paused["status"] == "paused", paused

    assert sdk.fine_tuning.jobs.resume(job_id).status in {"queued", "running"}
    done = wait_for_status(http, job_id, {"succeeded", "failed", "cancelled"}, timeout=600)
    assert done["status"] == "succeeded", (done, live_service.log("worker"))
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job_id, limit=100)]
    assert any(m.startswith("Resuming from checkpoint at step") for m in messages)
    assert any("paused" in m for m in messages)


def test_cancel_stops_a_running_job(live_service: LiveService) -> None:
    http, sdk, job_id = _start_job(live_service, "cancelling-customer", rows=24)
    wait_for_status(http, job_id, {"running"}, timeout=120)
    sdk.fine_tuning.jobs.cancel(job_id)
    done = wait_for_status(http, job_id, {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "cancelled", done
    assert done["result_files"] == []
    again = http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")  # idempotent once cancelled
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
