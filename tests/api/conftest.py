"""API test fixtures: the app on the session database, two tenants, recorded enqueues (training,
validation, screening)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.main import create_app
from tests.fixtures.db import TEST_ADMIN_KEY
from tests.fixtures.factories import make_tenant


@dataclass
class Customer:
    tenant_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr("worker.queue.enqueue_fine_tuning_job", calls.append)
    return calls


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Job ids sent to the validation queue (tests run worker.validation.validate_job)."""
    calls: list[str] = []
    monkeypatch.setattr("worker.queue.enqueue_validation", calls.append)
    return calls


@pytest.fixture
def screens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(tenant, file) screens sent to the validation queue."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "worker.queue.enqueue_screening", lambda tenant, file: calls.append((tenant, file))
    )
    return calls


@pytest.fixture
def client(
    engine: Engine,
    enqueued: list[str],
    validations: list[str],
    screens: list[tuple[str, str]],
    data_dir: Path,
) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def data_dir(keel_env: dict[str, str]) -> Path:
    """The session's data dir, emptied before each test."""
    path = Path(keel_env["KEEL_DATA_DIR"])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}


def _customer(session: Session, name: str) -> Customer:
    tenant, key = make_tenant(session, name)
    session.commit()
    return Customer(tenant.id, key)


@pytest.fixture
def alice(session: Session) -> Customer:
    return _customer(session, "alice")


@pytest.fixture
def bob(session: Session) -> Customer:
    return _customer(session, "bob")
