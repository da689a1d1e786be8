"""Connections are held only while queries run: auth commits on its own and returns its
connection before the route (an upload stream) starts; the pool is sized from settings.

Real Postgres, a real one-connection pool: if authentication still held the request's
connection, the second holder below could never get one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

import db.session
from api.main import create_app
from db.models import ApiKey
from db.session import dispose_engine, get_engine, make_engine
from db.settings import get_settings
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl


@pytest.fixture
def one_connection_pool(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    tiny = create_engine(get_settings().database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    monkeypatch.setattr(db.session, "_engine", tiny)
    monkeypatch.setattr(db.session, "_sessionmaker", sessionmaker(tiny, expire_on_commit=False))
    try:
        yield tiny
    finally:
        tiny.dispose()


def test_upload_stream_holds_no_connection(
    one_connection_pool: Engine, enqueued: list[str], data_dir: Path, alice: Customer
) -> None:
    # While the upload body streams, another holder takes the pool's only connection and runs a
    # query; the upload then registers its file. Before auth had its own transaction, auth's
    # connection stayed checked out through the stream and the other holder timed out.
    seen_during_stream: list[int] = []

    def body() -> Iterator[bytes]:
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield boundary + (
            b'Content-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        seen_during_stream.append(one_connection_pool.pool.checkedout())  # type: ignore[attr-defined]
        done = threading.Event()

        def other_holder() -> None:
            with one_connection_pool.connect() as conn:
                conn.execute(text("SELECT 1"))
            done.set()

        thread = threading.Thread(target=other_holder)
        thread.start()
        thread.join(timeout=5)
        assert done.is_set(), "the pool's only connection was held during the upload stream"
        yield chat_jsonl()
        yield b"\r\n--xyz--\r\n"

    with TestClient(create_app()) as client:
        response = client.post(
            "/v1/files",
            headers={**alice.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
            content=body(),
        )
    assert response.status_code == 200, response.text
    assert seen_during_stream == [0]
    assert one_connection_pool.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_last_used_at_commits_outside_the_request(
    client: TestClient, alice: Customer, session: Session
) -> None:
    # A request that fails after auth (404) rolls back its own transaction; the key's
    # last_used_at, written by auth in its own transaction, is kept.
    session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == alice.tenant_id)
        .values(last_used_at=datetime.now(UTC) - timedelta(days=1))
    )
    session.commit()
    before = session.scalar(select(ApiKey.last_used_at).where(ApiKey.tenant_id == alice.tenant_id))
    assert client.get("/v1/files/file-missing", headers=alice.headers).status_code == 404
    session.expire_all()
    after = session.scalar(select(ApiKey.last_used_at).where(ApiKey.tenant_id == alice.tenant_id))
    assert before is not None
    assert after is not None
    assert after > before


def test_pool_is_sized_from_settings(
    keel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "db_pool_size", 3)
    monkeypatch.setattr(settings, "db_max_overflow", 4)
    monkeypatch.setattr(settings, "db_pool_timeout", 1.5)
    dispose_engine()
    try:
        pool = get_engine().pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 4  # type: ignore[attr-defined]
        assert pool.timeout() == 1.5  # type: ignore[attr-defined]
    finally:
        monkeypatch.undo()
        dispose_engine()


def test_sqlite_gets_the_bounded_pool_too(tmp_path: Path) -> None:
    # SQLAlchemy's own default waits 30 s for a connection: 80 clients on the embedded default
    # got no answer at all. The bounded wait makes exhaustion a prompt 503.
    engine = make_engine(
        f"sqlite:///{tmp_path / 'k.db'}", pool_size=2, max_overflow=1, pool_timeout=0.3
    )
    try:
        held = [engine.connect() for _ in range(3)]
        with pytest.raises(Exception, match="QueuePool limit"):
            engine.connect()
        for conn in held:
            conn.close()
    finally:
        engine.dispose()
    memory = make_engine("sqlite:///:memory:")
    with memory.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    memory.dispose()
