"""Migrations: upgrade → downgrade → upgrade on Postgres and SQLite; models match head."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from db.base import Base
from tests.fixtures.db import (
    TABLES,
    alembic_config,
    create_database,
    drop_database,
    run_alembic,
)


@pytest.fixture
def scratch_pg() -> str:
    name = f"keel_mig_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    yield url  # type: ignore[misc]
    drop_database(name)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_postgres_round_trip_and_empty_autogenerate_diff(scratch_pg: str) -> None:
    run_alembic(scratch_pg, "upgrade", "head")
    assert _tables(scratch_pg) == set(TABLES)
    run_alembic(scratch_pg, "downgrade", "base")
    assert _tables(scratch_pg) == set()
    run_alembic(scratch_pg, "upgrade", "head")
    assert _tables(scratch_pg) == set(TABLES)
    assert _diff(scratch_pg) == []


def test_sqlite_round_trip_and_empty_autogenerate_diff(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    run_alembic(url, "upgrade", "head")
    run_alembic(url, "downgrade", "base")
    run_alembic(url, "upgrade", "head")
    assert _tables(url) == set(TABLES)
    assert _diff(url) == []


def test_no_create_all_in_source() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path)
        for package in ("api", "db", "worker", "migrations")
        for path in (root / package).rglob("*.py")
        if "create_all(" in path.read_text()
    ]
    assert offenders == []
