"""Request-scoped dependencies: the session (the request owns the transaction), the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from api.errors import Unauthorized
from db.admin_key import admin_key_matches
from db.repositories.admin import AdminKeyRepository
from db.repositories.tenants import ApiKeyRepository
from db.session import session_scope
from db.settings import KeelSettings, get_settings


def get_session() -> Iterator[Session]:
    """The request owns the transaction: commit on success, roll back on any error.

    This is the one commit of a request: services and routers never commit. Work that must
    follow the commit (enqueue, blob deletion) registers on ``db.after_commit.after_commit``
    and runs right after this commit, or is dropped when the request fails.
    """
    with session_scope() as session:
        yield session


# scope="function": commit *before* the response is sent. The default ("request") commits after
# it, so a client that creates a tenant, file or job and immediately reads it back could get a
# 404 (seen in the e2e suite), and a failed commit would follow an already-sent 200.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[KeelSettings, Depends(get_settings)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _bearer(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def admin_token_ok(token: str | None, admin_key_hash: str) -> bool:
    """Constant-time comparison of a presented token with the provider's admin key (hashed)."""
    return admin_key_matches(token, admin_key_hash)


def current_tenant(request: Request) -> str:
    token = _bearer(request)
    # Its own short transaction, not the request's: the key lookup (and the occasional
    # last_used_at write) commits here and hands the connection back to the pool at once. In the
    # request's session it held a connection — and on SQLite the write lock — for the whole
    # route, through a minutes-long upload stream (issue 22: every other tenant's writes and
    # the worker's heartbeats failed with "database is locked"). The request's session now
    # takes a connection only at its first query.
    tenant_id = None
    if token:
        with session_scope() as session:
            tenant_id = ApiKeyRepository(session).authenticate(token)
    if tenant_id is None:
        raise Unauthorized()
    # After auth, so the counter is the tenant's and an unauthenticated flood counts for no one.
    request.app.state.rate_limiter.check(tenant_id, request.method)
    return tenant_id


TenantDep = Annotated[str, Depends(current_tenant)]


# Who acted, in the audit trail, when the deployment's KEEL_ADMIN_KEY was used (it exists to
# create the first named admin key; named keys are what make admin actions accountable).
BOOTSTRAP_ADMIN = "bootstrap"


def require_admin(request: Request, session: SessionDep) -> str:
    """The acting admin's name: a live named admin key's, or BOOTSTRAP_ADMIN for the deployment's
    admin key (resolved once at start-up, db.admin_key: set, or generated in development)."""
    token = _bearer(request)
    if token is not None:
        if admin_token_ok(token, request.app.state.admin_key_hash):
            return BOOTSTRAP_ADMIN
        name = AdminKeyRepository(session).authenticate(token)
        if name is not None:
            return name
    raise Unauthorized("Invalid or missing admin key.", code="invalid_admin_key")


AdminDep = Annotated[str, Depends(require_admin)]


@dataclass(frozen=True)
class PageParams:
    after: str | None
    limit: int


def page_params(
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PageParams:
    return PageParams(after=after, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]
