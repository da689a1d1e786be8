"""Per-tenant rate limits: 429 `rate_limited` with Retry-After, one tenant never slows another.

Counters live in the real test Redis (the session's KEEL_BROKER_URL, KEEL_TEST_REDIS_DB), as on
the production path; the embedded default's in-memory storage is checked separately. Tenants are
fresh per test, so counters left in Redis by an earlier run never collide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from api.rate_limit import RateLimited, TenantRateLimiter, parse_limits, storage_url
from db.settings import get_settings
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl

READS = 5
WRITES = 3


@pytest.fixture
def limited_client(
    engine: Engine, enqueued: list[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    settings = get_settings()
    monkeypatch.setattr(settings, "rate_limit_reads", f"{READS}/minute")
    monkeypatch.setattr(settings, "rate_limit_writes", f"{WRITES}/minute")
    assert storage_url(settings).startswith("redis://")  # the production path, real Redis
    with TestClient(create_app()) as test_client:
        yield test_client


def _upload(client: TestClient, who: Customer) -> object:
    return client.post(
        "/v1/files",
        headers=who.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_jsonl())},
    )


def _assert_429(response: object) -> None:
    assert response.status_code == 429, response.text  # type: ignore[attr-defined]
    retry_after = int(response.headers["retry-after"])  # type: ignore[attr-defined]
    assert 1 <= retry_after <= 60
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "rate_limited"
    assert error["type"] == "rate_limit_error"
    assert "read" in error["message"] or "write" in error["message"]


def test_tenant_over_read_limit_gets_429_and_other_tenant_is_unaffected(
    limited_client: TestClient, alice: Customer, bob: Customer
) -> None:
    for _ in range(READS):
        assert limited_client.get("/v1/files", headers=alice.headers).status_code == 200
    _assert_429(limited_client.get("/v1/files", headers=alice.headers))
    # Any read route counts against the same allowance.
    _assert_429(limited_client.get("/v1/fine_tuning/jobs", headers=alice.headers))
    # Bob's allowance is his own, all of it.
    for _ in range(READS):
        assert limited_client.get("/v1/files", headers=bob.headers).status_code == 200
    _assert_429(limited_client.get("/v1/files", headers=bob.headers))


def test_writes_have_their_own_limit(
    limited_client: TestClient, alice: Customer, bob: Customer
) -> None:
    for _ in range(WRITES):
        assert _upload(limited_client, alice).status_code == 200  # type: ignore[attr-defined]
    refused = _upload(limited_client, alice)
    _assert_429(refused)
    # The refused upload stored nothing: alice still has exactly WRITES files.
    listed = limited_client.get("/v1/files", headers=alice.headers)
    assert listed.status_code == 200  # reads are a separate allowance
    assert len(listed.json()["data"]) == WRITES
    assert _upload(limited_client, bob).status_code == 200  # type: ignore[attr-defined]


def test_unauthenticated_requests_count_for_no_tenant(
    limited_client: TestClient, alice: Customer
) -> None:
    for _ in range(READS * 2):
        assert limited_client.get("/v1/files").status_code == 401
    assert limited_client.get("/v1/files", headers=alice.headers).status_code == 200


def test_in_memory_storage_limits_too() -> None:
    # The embedded default (SQLite broker) has no Redis: counters in this process's memory.
    limiter = TenantRateLimiter(parse_limits("2/minute", "x"), [], "memory://")
    limiter.check("tenant-a", "GET")
    limiter.check("tenant-a", "GET")
    with pytest.raises(RateLimited) as refused:
        limiter.check("tenant-a", "GET")
    assert refused.value.code == "rate_limited"
    assert refused.value.headers is not None
    assert int(refused.value.headers["Retry-After"]) >= 1
    limiter.check("tenant-b", "GET")
    limiter.check("tenant-a", "POST")  # writes unlimited here


def test_storage_outage_fails_open_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    # A real connection to a port nothing listens on: the limiter must not turn a Redis outage
    # into failed requests (the database has its own 503 path).
    limiter = TenantRateLimiter(parse_limits("1/minute", "x"), [], "redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="keel.api"):
        for _ in range(3):
            limiter.check("tenant-a", "GET")
    warnings = [r for r in caplog.records if "rate limit storage unavailable" in r.message]
    assert len(warnings) == 1


def test_storage_url_defaults() -> None:
    settings = get_settings().model_copy()
    settings.rate_limit_storage_url = ""
    settings.broker_url = "sqla+sqlite:///./var/broker.db"
    assert storage_url(settings) == "memory://"
    settings.broker_url = "redis://127.0.0.1:6379/3"
    assert storage_url(settings) == "redis://127.0.0.1:6379/3"
    settings.rate_limit_storage_url = "redis://other:6379/0"
    assert storage_url(settings) == "redis://other:6379/0"


@pytest.mark.parametrize("value", ["", "off", "None"])
def test_limits_can_be_switched_off(value: str) -> None:
    assert parse_limits(value, "KEEL_RATE_LIMIT_READS") == []


def test_malformed_limit_names_the_setting() -> None:
    with pytest.raises(ValueError, match="KEEL_RATE_LIMIT_WRITES"):
        parse_limits("lots per hour", "KEEL_RATE_LIMIT_WRITES")
