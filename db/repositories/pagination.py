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


def fetch_page(session: Any, stmt: Select[Any], limit: int) -> Page[Any]:
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
