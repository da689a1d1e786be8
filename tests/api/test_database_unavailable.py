"""A database outage is a 503 with Retry-After and the error envelope, never a 500 or a trace.

Real failures, no mocks: the app's engine points at a TCP port with nothing listening, or at the
real test database through a one-connection pool that another holder has exhausted.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker

import db.session
from api.main import create_app
from db.session import dispose_engine
from db.settings import get_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def unreachable_database(
    keel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/keel"
    monkeypatch.setattr(get_settings(), "database_url", url)
    dispose_engine()
    yield
    monkeypatch.undo()
    dispose_engine()  # the next test builds its engine on the real URL again


def _assert_503(response: object) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.headers["retry-after"] == "5"  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "error": {
            "message": "The database is unavailable; retry shortly.",
            "type": "server_error",
            "param": None,
            "code": "database_unavailable",
        }
    }
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    assert "127.0.0.1" not in response.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "path", "admin"),
    [
        ("GET", "/v1/files", False),
        ("GET", "/v1/fine_tuning/jobs", False),
        ("POST", "/v1/fine_tuning/jobs/ftjob-x/cancel", False),
        ("GET", "/admin/v1/tenants", True),
        ("GET", "/admin/v1/policy", True),
        ("GET", "/metrics", False),
    ],
)
def test_unreachable_database_is_503(
    unreachable_database: None, method: str, path: str, admin: bool
) -> None:
    from tests.fixtures.db import TEST_ADMIN_KEY

    key = TEST_ADMIN_KEY if admin else "sk-keel-anything"
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        response = client.request(method, path, headers={"Authorization": f"Bearer {key}"})
        _assert_503(response)
        # The process answers on: readiness reports the database, liveness stays up.
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False


def test_exhausted_pool_is_503(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    url = get_settings().database_url
    tiny = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    monkeypatch.setattr(db.session, "_engine", tiny)
    monkeypatch.setattr(db.session, "_sessionmaker", sessionmaker(tiny, expire_on_commit=False))
    try:
        with tiny.connect() as held:  # the one connection, held by someone else
            held.execute(text("SELECT 1"))
            with TestClient(create_app(), raise_server_exceptions=False) as client:
                response = client.get(
                    "/v1/files", headers={"Authorization": "Bearer sk-keel-anything"}
                )
            _assert_503(response)
    finally:
        tiny.dispose()
