"""Per-tenant quotas (policy `quotas`): refused with a stable code, atomic under concurrency,
visible to the tenant at GET /v1/usage."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.usage import UsageRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl, make_file, make_job

MODEL = "smollm2-135m-instruct"


def _set_quotas(client: TestClient, admin_headers: dict[str, str], **quotas: Any) -> None:
    current = client.get("/admin/v1/policy", headers=admin_headers).json()["policy"]
    response = client.put(
        "/admin/v1/policy", headers=admin_headers, json={**current, "quotas": quotas}
    )
    assert response.status_code == 200, response.text


def _upload(client: TestClient, who: Customer, content: bytes) -> Any:
    return client.post(
        "/v1/files",
        headers=who.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content)},
    )


def _create(client: TestClient, who: Customer, training_file: str) -> Any:
    return client.post(
        "/v1/fine_tuning/jobs",
        headers=who.headers,
        json={"model": MODEL, "training_file": training_file},
    )


def _active_jobs(tenant_id: str) -> int:
    with session_scope() as session:
        return UsageRepository(session).active_jobs(tenant_id)


def test_the_last_active_job_slot_is_refused_with_429_and_usage_shows_it(
    client: TestClient, alice: Customer, bob: Customer, admin_headers: dict[str, str]
) -> None:
    _set_quotas(client, admin_headers, max_active_jobs=2)
    file_id = _upload(client, alice, chat_jsonl(3)).json()["id"]
    assert [_create(client, alice, file_id).status_code for _ in range(2)] == [200, 200]
    refused = _create(client, alice, file_id)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("quota_active_jobs_exceeded", "rate_limit_error")
    assert "limit is 2" in error["message"]
    usage = client.get("/v1/usage", headers=alice.headers).json()
    assert usage["object"] == "usage"
    assert usage["active_jobs"] == {"used": 2, "limit": 2}
    # Another tenant's jobs are not counted against alice, nor hers against bob.
    assert client.get("/v1/usage", headers=bob.headers).json()["active_jobs"]["used"] == 0
    bob_file = _upload(client, bob, chat_jsonl(3)).json()["id"]
    assert _create(client, bob, bob_file).status_code == 200
    # A job that ends frees its slot.
    job_id = client.get("/v1/fine_tuning/jobs", headers=alice.headers).json()["data"][0]["id"]
    cancel = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=alice.headers)
    assert cancel.status_code == 200
    assert _create(client, alice, file_id).status_code == 200


def test_concurrent_creates_cannot_both_take_the_last_slot(
    client: TestClient,
    alice: Customer,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real threads, real Postgres: 6 creates at once for 3 free slots give exactly 3 jobs.

    The count is slowed down so that, without the tenant row lock, every request would count
    before any inserts (the race the lock closes).
    """
    _set_quotas(client, admin_headers, max_active_jobs=3)
    file_id = _upload(client, alice, chat_jsonl(3)).json()["id"]
    counted = UsageRepository.active_jobs

    def slow_count(self: UsageRepository, tenant_id: str) -> int:
        n = counted(self, tenant_id)
        time.sleep(0.3)
        return n

    monkeypatch.setattr(UsageRepository, "active_jobs", slow_count)
    barrier = threading.Barrier(6)
    statuses: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        response = _create(client, alice, file_id)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    assert _active_jobs(alice.tenant_id) == 3


def test_trained_tokens_per_day_quota(
    client: TestClient,
    session: Session,
    alice: Customer,
    admin_headers: dict[str, str],
    data_dir: Path,
) -> None:
    _set_quotas(client, admin_headers, max_trained_tokens_per_day=1000)
    file = make_file(session, alice.tenant_id, data_dir)
    # 600 tokens yesterday-but-within-24h + 500 today = 1100 >= 1000; an older job is not counted.
    for tokens, hours_ago in ((600, 20), (500, 1), (10_000, 30)):
        make_job(
            session,
            alice.tenant_id,
            file.id,
            status=JobStatus.SUCCEEDED,
            trained_tokens=tokens,
            finished_at=utcnow() - timedelta(hours=hours_ago),
        )
    session.commit()
    usage = client.get("/v1/usage", headers=alice.headers).json()["trained_tokens_per_day"]
    assert usage == {"used": 1100, "limit": 1000, "window_seconds": 86400}
    refused = _create(client, alice, file.id)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_trained_tokens_exceeded"
    _set_quotas(client, admin_headers, max_trained_tokens_per_day=None)
    assert _create(client, alice, file.id).status_code == 200


def test_an_upload_past_the_storage_quota_is_403_and_stores_nothing(
    client: TestClient, alice: Customer, admin_headers: dict[str, str], data_dir: Path
) -> None:
    first = chat_jsonl(3)
    _set_quotas(client, admin_headers, max_stored_bytes=len(first) + 10)
    assert _upload(client, alice, first).status_code == 200
    refused = _upload(client, alice, chat_jsonl(3))
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("quota_storage_exceeded", "file")
    with session_scope() as s:
        assert UsageRepository(s).stored_bytes(alice.tenant_id) == len(first)
    blobs = [p for p in data_dir.rglob("*") if p.is_file()]
    assert len(blobs) == 1  # the refused upload's bytes were removed
    usage = client.get("/v1/usage", headers=alice.headers).json()["stored_bytes"]
    assert usage == {"used": len(first), "limit": len(first) + 10}


def test_no_quota_means_no_limit(
    client: TestClient, alice: Customer, admin_headers: dict[str, str]
) -> None:
    _set_quotas(
        client,
        admin_headers,
        max_active_jobs=None,
        max_trained_tokens_per_day=None,
        max_stored_bytes=None,
    )
    file_id = _upload(client, alice, chat_jsonl(3)).json()["id"]
    assert all(_create(client, alice, file_id).status_code == 200 for _ in range(5))
    with session_scope() as s:
        count = s.scalar(select(func.count()).select_from(FineTuningJob))
    assert count == 5
    assert client.get("/v1/usage", headers=alice.headers).json()["active_jobs"]["limit"] is None
