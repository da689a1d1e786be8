"""SIGKILL the worker mid-training: the job resumes from its last checkpoint on a fresh worker."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.service import LiveService, create_small_job, wait_for_status


def _events(client: httpx.Client, job_id: str) -> list[dict[str, object]]:
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
    return list(reversed(page["data"]))


# On an object store the successor has its own, empty data dir: it resumes from the checkpoint
# the killed worker stored in the bucket.
@pytest.mark.parametrize("deployment", ["live_service", "live_service_s3"])
def test_sigkilled_worker_job_resumes_from_checkpoint(
    deployment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    live_service: LiveService = request.getfixturevalue(deployment)
    key = live_service.create_tenant("crash-customer")
    client = httpx.Client(
        base_url=live_service.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    job_id = create_small_job(client, 24, {"n_epochs": 1, "batch_size": 2}, seed=5)

    deadline = time.monotonic() + 300
    while not any(e["type"] == "checkpoint" for e in _events(client, job_id)):
        assert time.monotonic() < deadline, live_service.log("worker")
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] != "failed"
        time.sleep(0.5)
    live_service.kill("worker")  # main process and pool child, no chance to clean up
    live_service.start_worker("worker2")

    finished = wait_for_status(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=600)
    assert finished["status"] == "succeeded", (finished, live_service.log("worker2"))
    assert len(finished["result_files"]) == 1  # type: ignore[arg-type]

    messages = [str(e["message"]) for e in _events(client, job_id)]
    story = "\n".join(messages)
    assert "lease expired" in story
    assert any(m.startswith("Resuming from checkpoint at step") for m in messages)
    assert sum(m.startswith("Job started on worker") for m in messages) == 2

    dsn = live_service.env["KEEL_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(dsn) as conn:
        artifacts = conn.execute(
            "SELECT count(*) FROM artifact WHERE job_id = %s", (job_id,)
        ).fetchone()
        attempts = conn.execute(
            "SELECT attempts FROM fine_tuning_job WHERE id = %s", (job_id,)
        ).fetchone()
    assert artifacts == (1,)
    assert attempts == (2,)
    if live_service.object_store is not None:
        # worker2 started on an empty data dir of its own: the checkpoint it resumed from (and
        # the training file) came from the bucket.
        assert live_service.data_dir("worker2") != live_service.data_dir("worker")
