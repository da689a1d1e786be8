"""The real path: the API sends a new job and a screen request through Redis to a real Celery
validator process (cli.local_service.validator_argv, as `keel serve` and docker-compose run it),
which validates and screens with no training worker running at all, and sends the validated job
on to the gpu queue."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from cli.local_service import spawn, stop, validator_argv
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
ADMIN = {"Authorization": "Bearer " + "test-admin-" + "k" * 32}


def _until(check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not reached within {timeout:.0f} s")


@pytest.fixture
def broker(keel_env: dict[str, str]) -> Iterator[redis.Redis]:
    """The session's Redis database (KEEL_TEST_REDIS_DB), empty before and after."""
    client = redis.Redis.from_url(keel_env["KEEL_BROKER_URL"])
    client.flushdb()
    yield client
    client.flushdb()


def test_a_real_validator_validates_and_screens_without_a_training_worker(
    engine: Engine, data_dir: Path, alice: Customer, broker: redis.Redis, tmp_path: Path
) -> None:
    validator = spawn(
        validator_argv(f"validator-{uuid.uuid4().hex[:6]}@%h"),
        tmp_path / "validator.log",
        dict(os.environ),  # the session's KEEL_* settings (database, broker, data dir)
        cwd=ROOT,
    )
    try:
        with TestClient(create_app()) as client:
            policy = client.put(
                "/admin/v1/policy",
                headers=ADMIN,
                json={"allowed_models": [MODEL], "screening": {"enabled": True}},
            )
            assert policy.status_code == 200, policy.text
            upload = client.post(
                "/v1/files",
                headers=alice.headers,
                data={"purpose": "fine-tune"},
                files={"file": ("t.jsonl", chat_jsonl(5))},
            )
            file_id = upload.json()["id"]
            created = client.post(
                "/v1/fine_tuning/jobs",
                headers=alice.headers,
                json={"model": MODEL, "training_file": file_id},
            ).json()
            assert created["status"] == "validating_files"

            def status() -> str | None:
                job = client.get(f"/v1/fine_tuning/jobs/{created['id']}", headers=alice.headers)
                value = job.json()["status"]
                return value if value != "validating_files" else None

            assert _until(status) == "queued"
            # Sent on for training by the validator, right after the queued status commits.
            assert _until(lambda: broker.llen("gpu") == 1, timeout=30)

            # Job validation cached the file's screening: the endpoint answers at once.
            screened = client.post(f"/v1/files/{file_id}/screen", headers=alice.headers)
            assert screened.status_code == 200
            assert screened.json()["summary"]["rows"] == 5

            # A file never screened: 202, then the validator's result.
            other = client.post(
                "/v1/files",
                headers=alice.headers,
                data={"purpose": "fine-tune"},
                files={"file": ("u.jsonl", chat_jsonl(7))},
            ).json()["id"]
            first = client.post(f"/v1/files/{other}/screen", headers=alice.headers)
            assert first.status_code == 202

            def screened_by_now() -> Any:
                answer = client.post(f"/v1/files/{other}/screen", headers=alice.headers)
                return answer if answer.status_code == 200 else None

            done = _until(screened_by_now)
            assert done.json()["status"] == "completed"
            assert done.json()["summary"]["rows"] == 7
    finally:
        stop(validator, timeout=20)
    log = (tmp_path / "validator.log").read_text()
    assert "keel.validate_job_files" in log
    assert "keel.screen_file" in log
