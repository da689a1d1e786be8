"""Work that must follow a commit: registered on the session, run once it commits, dropped if not.

A request owns one transaction (api.dependencies.get_session); what must happen only once its
rows are durable (sending the job id to the queue, deleting a deleted model's bytes, the webhooks'
outbox to come) registers here instead of committing early. The callbacks belong to the session's
current outermost transaction: they run, in order, right after it commits, and are discarded
when it ends any other way (rollback, close) -- a request that fails never enqueues a job it
did not store, and never deletes the bytes of a model it did not delete.

A callback runs after the commit, outside it: it must not use this session (open its own
``session_scope`` for writes), and an exception is logged, not raised -- the commit has already
happened, so turning it into an error response would tell the client the opposite of the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("keel.db.after_commit")

_KEY = "keel.after_commit"


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's current transaction commits (dropped on rollback)."""
    session.info.setdefault(_KEY, []).append(callback)


def pending(session: Session) -> int:
    """How many callbacks wait for the session's commit (for tests and assertions)."""
    return len(session.info.get(_KEY, ()))


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], None]] = session.info.pop(_KEY, [])
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - the commit stands; see the module docstring
            log.exception("after-commit callback %r failed", callback)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended; after a commit the list is already empty, so anything
    # still here was registered in a transaction that rolled back or was closed uncommitted.
    if transaction.parent is None and not transaction.nested:
        dropped = session.info.pop(_KEY, [])
        if dropped:
            log.info(
                "dropped %d after-commit callback(s): the transaction did not commit", len(dropped)
            )
