"""Cursor pagination over (created_at, id): `after` is the id of the last object seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_

T = TypeVar("T")


class InvalidCursorError(ValueError):
    """The `after` cursor names no object visible to this tenant."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


def keyset_after(
    created_col: Any, id_col: Any, created_at: datetime, object_id: str, *, descending: bool
) -> ColumnElement[bool]:
    if descending:
        return or_(created_col < created_at, and_(created_col == created_at, id_col < object_id))
    return or_(created_col > created_at, and_(created_col == created_at, id_col > object_id))


def order_keys(created_col: Any, id_col: Any, *, descending: bool) -> tuple[Any, Any]:
    if descending:
        return created_col.desc(), id_col.desc()
    return created_col.asc(), id_col.asc()


def page_after(stmt: Select[Any], cursor: Any, after: str, *, descending: bool) -> Select[Any]:
    """``stmt`` narrowed to the objects after ``cursor`` (the object ``after`` names, already
    looked up in the caller's tenant scope; None means no such object there, so the cursor is
    refused the same way whether it is absent or another tenant's)."""
    if cursor is None:
        raise InvalidCursorError(after)
    model = type(cursor)
    return stmt.where(
        keyset_after(
            model.created_at, model.id, cursor.created_at, cursor.id, descending=descending
        )
    )


def fetch_page(session: Any, stmt: Select[Any], limit: int) -> Page[Any]:
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
