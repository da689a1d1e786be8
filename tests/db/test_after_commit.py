"""db.after_commit: callbacks run once the transaction commits, and never when it does not."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.orm import Session

from db.after_commit import after_commit, pending
from db.models import Tenant
from db.repositories.tenants import TenantRepository
from db.session import session_scope
from tests.fixtures.factories import make_tenant


def _tenant_is_stored(tenant_id: str) -> bool:
    # A separate session and connection: sees only what was committed.
    with session_scope() as other:
        return other.get(Tenant, tenant_id) is not None


def test_callbacks_run_in_order_after_the_commit_is_visible(session: Session) -> None:
    tenant, _ = make_tenant(session, "after-commit")
    seen: list[tuple[str, bool]] = []
    after_commit(session, lambda: seen.append(("first", _tenant_is_stored(tenant.id))))
    after_commit(session, lambda: seen.append(("second", _tenant_is_stored(tenant.id))))
    session.flush()
    assert seen == []  # a flush is not a commit
    session.commit()
    assert seen == [("first", True), ("second", True)]
    assert pending(session) == 0
    session.commit()  # the next transaction starts empty: nothing runs twice
    assert len(seen) == 2


def test_callbacks_are_dropped_on_rollback(session: Session) -> None:
    tenant, _ = make_tenant(session, "rolled-back")
    ran: list[str] = []
    after_commit(session, lambda: ran.append(tenant.id))
    session.rollback()
    assert pending(session) == 0
    session.commit()  # a later commit does not resurrect them
    assert ran == []
    assert not _tenant_is_stored(tenant.id)


def _failing_request(ran: list[str]) -> None:
    with session_scope() as failing:
        TenantRepository(failing).add("never-stored")
        after_commit(failing, lambda: ran.append("failed request"))
        raise RuntimeError("the request failed")


def test_a_failing_session_scope_drops_them_and_a_committing_one_runs_them(engine: object) -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError):
        _failing_request(ran)
    with session_scope() as ok:
        TenantRepository(ok).add("stored")
        after_commit(ok, lambda: ran.append("committed request"))
    assert ran == ["committed request"]


def test_a_rolled_back_savepoint_keeps_the_transactions_callbacks(session: Session) -> None:
    ran: list[str] = []
    after_commit(session, lambda: ran.append("outer"))
    with session.begin_nested() as savepoint:
        make_tenant(session, "inner")
        savepoint.rollback()
    assert pending(session) == 1
    session.commit()
    assert ran == ["outer"]


def test_a_failing_callback_is_logged_and_the_commit_stands(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, _ = make_tenant(session, "committed-anyway")
    ran: list[str] = []

    def broken() -> None:
        raise OSError("disk gone")

    after_commit(session, broken)
    after_commit(session, lambda: ran.append("next"))
    with caplog.at_level(logging.ERROR, logger="keel.db.after_commit"):
        session.commit()
    assert _tenant_is_stored(tenant.id)
    assert ran == ["next"]  # one failure does not skip the callbacks after it
    assert "after-commit callback" in caplog.text
