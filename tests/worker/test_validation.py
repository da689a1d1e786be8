"""Validation off the request path (worker.validation): cancel, crashes and the reaper, the
screening cache (by tenant, sha256 and screening fingerprint) shared by jobs and the screen
endpoint."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import screening
from db.base import utcnow
from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl, make_adapter_job, make_file, make_job
from worker.reaper import revalidate_once
from worker.settings import WorkerSettings
from worker.validation import screen_file, validate_job

MODEL = "smollm2-135m-instruct"
MODELS = Path(__file__).resolve().parents[2] / "var" / "models"
ADMIN = {"Authorization": "Bearer " + "test-admin-" + "k" * 32}


def _upload(client: TestClient, who: Customer, content: bytes) -> str:
    response = client.post(
        "/v1/files",
        headers=who.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content)},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _policy(client: TestClient, **screening_section: Any) -> None:
    response = client.put(
        "/admin/v1/policy",
        headers=ADMIN,
        json={"allowed_models": [MODEL], "screening": {"enabled": True, **screening_section}},
    )
    assert response.status_code == 200, response.text


def _create(client: TestClient, who: Customer, file_id: str) -> str:
    response = client.post(
        "/v1/fine_tuning/jobs", headers=who.headers, json={"model": MODEL, "training_file": file_id}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "validating_files"
    return str(response.json()["id"])


def _job(client: TestClient, who: Customer, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=who.headers).json()
    return body


def _messages(client: TestClient, who: Customer, job_id: str) -> list[str]:
    events = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events", headers=who.headers, params={"limit": 100}
    ).json()
    return [e["message"] for e in events["data"]][::-1]


@pytest.fixture
def screen_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real screens (rows screened per call): a cache hit adds nothing."""
    calls: list[int] = []
    real = screening.screen_conversations

    def counting(conversations: Any) -> list[screening.ScreenResult]:
        rows = list(conversations)
        calls.append(len(rows))
        return real(rows)

    monkeypatch.setattr(screening, "screen_conversations", counting)
    return calls


def test_cancel_while_validating_wins_over_the_result(
    client: TestClient,
    alice: Customer,
    enqueued: list[str],
    validations: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    file_id = _upload(client, alice, chat_jsonl(5))
    # Cancelled before the validator takes it: validation does nothing.
    early = _create(client, alice, file_id)
    cancel = client.post(f"/v1/fine_tuning/jobs/{early}/cancel", headers=alice.headers)
    assert cancel.json()["status"] == "cancelled"
    assert validate_job(early) is None
    assert _job(client, alice, early)["status"] == "cancelled"

    # Cancelled while the validator screens the file: the late result writes nothing.
    late = _create(client, alice, file_id)
    real = screening.screen_conversations

    def cancel_midway(conversations: Any) -> list[screening.ScreenResult]:
        response = client.post(f"/v1/fine_tuning/jobs/{late}/cancel", headers=alice.headers)
        assert response.json()["status"] == "cancelled"
        return real(conversations)

    monkeypatch.setattr(screening, "screen_conversations", cancel_midway)
    assert validate_job(late) is None
    job = _job(client, alice, late)
    assert (job["status"], job["error"]) == ("cancelled", None)
    assert enqueued == []
    assert validations == [early, late]
    assert "Files validated, moving job to queued state" not in _messages(client, alice, late)


def test_a_validator_lost_mid_file_is_replaced_by_the_reaper(
    client: TestClient, alice: Customer, enqueued: list[str], validations: list[str]
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    job_id = _create(client, alice, _upload(client, alice, chat_jsonl(5)))
    settings = WorkerSettings(requeue_after_seconds=60, max_attempts=3)
    # A validator took the job, then died (SIGKILL, OOM) without a result.
    with session_scope() as s:
        assert JobRepository(s).begin_validation(job_id) is not None
    assert revalidate_once(settings, utcnow()) == []  # not stale yet: it may still be working
    later = utcnow() + timedelta(seconds=61)
    assert revalidate_once(settings, later) == [job_id]
    assert validations == [job_id, job_id]
    assert validate_job(job_id) == "queued"  # the re-sent validation, on a live validator
    assert enqueued == [job_id]
    messages = _messages(client, alice, job_id)
    assert "Validating training file again (attempt 2)" in messages
    assert messages[-1] == "Files validated, moving job to queued state"
    assert revalidate_once(settings, later + timedelta(hours=1)) == []  # nothing left to do


def test_a_file_that_kills_every_validator_fails_the_job(
    client: TestClient, alice: Customer, validations: list[str]
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    job_id = _create(client, alice, _upload(client, alice, chat_jsonl(5)))
    settings = WorkerSettings(requeue_after_seconds=60, max_attempts=2)
    now = utcnow()
    for attempt in range(2):
        with session_scope() as s:
            assert JobRepository(s).begin_validation(job_id, now=now) is not None
        now += timedelta(seconds=61)
        sent = revalidate_once(settings, now)
        assert sent == ([job_id] if attempt == 0 else [])
    job = _job(client, alice, job_id)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["param"]) == ("worker_lost", "training_file")
    assert "2 times" in job["error"]["message"]


def test_a_crash_in_screening_fails_the_job_with_internal_error(
    client: TestClient, alice: Customer, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    job_id = _create(client, alice, _upload(client, alice, chat_jsonl(5)))

    def boom(conversations: Any) -> list[screening.ScreenResult]:
        raise MemoryError

    monkeypatch.setattr(screening, "screen_conversations", boom)
    assert validate_job(job_id) == "failed"
    job = _job(client, alice, job_id)
    assert job["error"]["code"] == "internal_error"
    assert "MemoryError" in job["error"]["message"]
    assert enqueued == []


def test_screening_is_cached_by_content_and_policy_and_shared_with_the_endpoint(
    client: TestClient,
    alice: Customer,
    bob: Customer,
    screen_calls: list[int],
    screens: list[tuple[str, str]],
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    content = chat_jsonl(6)
    first = _upload(client, alice, content)
    second = _upload(client, alice, content)  # the same bytes under another id

    assert validate_job(_create(client, alice, first)) == "queued"
    assert screen_calls == [6]
    # Same sha256, same policy: the second job and the endpoint reuse the result.
    assert validate_job(_create(client, alice, second)) == "queued"
    done = client.post(f"/v1/files/{second}/screen", headers=alice.headers)
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert done.json()["summary"]["rows"] == 6
    assert [r["line"] for r in done.json()["results"]] == [1, 2, 3, 4, 5, 6]
    assert screen_calls == [6]
    assert screens == []

    # Another tenant's identical bytes are not a hit: a hit would tell Bob that someone had
    # already uploaded this file.
    bobs = _upload(client, bob, content)
    pending = client.post(f"/v1/files/{bobs}/screen", headers=bob.headers)
    assert pending.status_code == 202
    assert pending.json()["status"] == "pending"
    assert screens == [(bob.tenant_id, bobs)]
    screen_file(bob.tenant_id, bobs)
    assert screen_calls == [6, 6]
    assert client.post(f"/v1/files/{bobs}/screen", headers=bob.headers).status_code == 200

    # A screening policy change is a new fingerprint: a miss, screened again.
    _policy(client, max_flagged_fraction=0.10)
    assert client.post(f"/v1/files/{first}/screen", headers=alice.headers).status_code == 202
    assert validate_job(_create(client, alice, first)) == "queued"
    assert screen_calls == [6, 6, 6]
    assert client.post(f"/v1/files/{first}/screen", headers=alice.headers).status_code == 200


def test_screen_refuses_a_result_file(
    client: TestClient, alice: Customer, session: Session, data_dir: Path
) -> None:
    _, result = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    response = client.post(f"/v1/files/{result.id}/screen", headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_file_purpose"


def test_screening_disabled_queues_without_screening(
    client: TestClient, alice: Customer, enqueued: list[str], screen_calls: list[int]
) -> None:
    job_id = _create(client, alice, _upload(client, alice, chat_jsonl(3)))  # test policy: off
    assert validate_job(job_id) == "queued"
    assert screen_calls == []
    assert enqueued == [job_id]


def test_a_file_over_the_remaining_daily_tokens_fails_at_validation(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    enqueued: list[str],
    tmp_path: Path,
) -> None:
    response = client.put(
        "/admin/v1/policy",
        headers=ADMIN,
        json={"allowed_models": [MODEL], "quotas": {"max_trained_tokens_per_day": 1000}},
    )
    assert response.status_code == 200, response.text
    # A job that ended an hour ago trained 990 of the tenant's 1000 tokens for the day.
    earlier = make_file(session, alice.tenant_id, data_dir)
    make_job(
        session,
        alice.tenant_id,
        earlier.id,
        status=JobStatus.SUCCEEDED,
        trained_tokens=990,
        finished_at=utcnow() - timedelta(hours=1),
    )
    session.commit()
    file_id = _upload(client, alice, chat_jsonl(5))  # ~45 tokens: more than the 10 left
    job_id = _create(client, alice, file_id)  # under the quota at create: 990 < 1000

    with_tokenizer = WorkerSettings(model_cache_dir=MODELS)
    assert validate_job(job_id, with_tokenizer) == "failed"
    job = _job(client, alice, job_id)
    assert (job["error"]["code"], job["error"]["param"]) == (
        "quota_trained_tokens_exceeded",
        "training_file",
    )
    assert "10 of its 1000 trained tokens per day left" in job["error"]["message"]
    assert enqueued == []

    # Without the model's tokenizer here the check is skipped (the start-time cut still holds).
    skipped = _create(client, alice, file_id)
    assert validate_job(skipped, WorkerSettings(model_cache_dir=tmp_path)) == "queued"

    # With room left the same file passes.
    response = client.put(
        "/admin/v1/policy",
        headers=ADMIN,
        json={"allowed_models": [MODEL], "quotas": {"max_trained_tokens_per_day": 2000}},
    )
    assert response.status_code == 200
    roomy = _create(client, alice, file_id)
    assert validate_job(roomy, with_tokenizer) == "queued"
    assert enqueued == [skipped, roomy]


def test_a_long_validation_keeps_the_reaper_away(
    client: TestClient,
    alice: Customer,
    validations: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _policy(client, max_flagged_fraction=0.05)
    job_id = _create(client, alice, _upload(client, alice, chat_jsonl(5)))
    settings = WorkerSettings(requeue_after_seconds=3, max_attempts=3)  # touched every second
    real = screening.screen_conversations
    reaper_saw: list[list[str]] = []

    def slow(conversations: Any) -> list[screening.ScreenResult]:
        time.sleep(4.5)  # longer than requeue_after_seconds: stale unless touched
        reaper_saw.append(revalidate_once(settings, utcnow()))
        return real(conversations)

    monkeypatch.setattr(screening, "screen_conversations", slow)
    assert validate_job(job_id, settings) == "queued"
    assert reaper_saw == [[]]
    assert validations == [job_id]  # only the create's send: no duplicate validation
