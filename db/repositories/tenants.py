"""Tenants and API keys. Keys are shown once; only their sha256 is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import API_KEY_PREFIX, TENANT_PREFIX, new_id
from db.models import ApiKey, Tenant
from db.repositories.pagination import (
    Page,
    fetch_page,
    order_keys,
    page_after,
)
from db.repositories.secret_keys import hash_api_key, mark_used, mint_key

KEY_SCHEME = "sk-keel-"


class TenantRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, name: str) -> Tenant:
        tenant = Tenant(id=new_id(TENANT_PREFIX), name=name, created_at=utcnow())
        self.session.add(tenant)
        self.session.flush()
        return tenant

    def get(self, tenant_id: str) -> Tenant | None:
        return self.session.get(Tenant, tenant_id)

    def get_by_name(self, name: str) -> Tenant | None:
        return self.session.scalar(select(Tenant).where(Tenant.name == name))

    def set_disabled(self, tenant_id: str, disabled: bool) -> Tenant | None:
        """Disable (its keys stop at the next request, its queued jobs are not claimed) or
        enable a tenant; a repeat keeps the first disabled_at."""
        tenant = self.get(tenant_id)
        if tenant is None:
            return None
        if disabled and tenant.disabled_at is None:
            tenant.disabled_at = utcnow()
        elif not disabled:
            tenant.disabled_at = None
        self.session.flush()
        return tenant

    def list(self, after: str | None, limit: int) -> Page[Tenant]:
        stmt = select(Tenant).order_by(*order_keys(Tenant.created_at, Tenant.id, descending=False))
        if after is not None:
            stmt = page_after(stmt, self.get(after), after, descending=False)
        return fetch_page(self.session, stmt, limit)


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(self, tenant_id: str) -> tuple[ApiKey, str]:
        """A new key for the tenant; returns the row and the plaintext key (never stored)."""
        minted = mint_key(KEY_SCHEME)
        key = ApiKey(
            id=new_id(API_KEY_PREFIX),
            tenant_id=tenant_id,
            key_hash=minted.key_hash,
            key_prefix=minted.key_prefix,
            created_at=utcnow(),
        )
        self.session.add(key)
        self.session.flush()
        return key, minted.plaintext

    def authenticate(self, plaintext: str, now: datetime | None = None) -> str | None:
        """The tenant id of a live key on an enabled tenant, else None."""
        found = self.identify(plaintext, now)
        return None if found is None else found[1]

    def identify(self, plaintext: str, now: datetime | None = None) -> tuple[str, str] | None:
        """(key id, tenant id) of a live key on an enabled tenant, else None."""
        now = now or utcnow()
        row = self.session.execute(
            select(ApiKey.id, ApiKey.tenant_id, ApiKey.last_used_at)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(
                ApiKey.key_hash == hash_api_key(plaintext),
                ApiKey.revoked_at.is_(None),
                Tenant.disabled_at.is_(None),
            )
        ).first()
        if row is None:
            return None
        mark_used(self.session, ApiKey, row.id, row.last_used_at, now)
        return str(row.id), str(row.tenant_id)

    def live_tenant_of_key_id(self, key_id: str) -> str | None:
        """The tenant of key `key_id` while the key is live and its tenant enabled, else None
        (the web console re-checks its session's key with this on every request)."""
        tenant_id = self.session.scalar(
            select(ApiKey.tenant_id)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None), Tenant.disabled_at.is_(None))
        )
        return None if tenant_id is None else str(tenant_id)

    def live_tenant(self, plaintext: str) -> str | None:
        """Like `authenticate`, read-only (no last_used_at write): for re-checking a key that a
        long request (an event stream) was opened with."""
        tenant_id = self.session.scalar(
            select(ApiKey.tenant_id)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(
                ApiKey.key_hash == hash_api_key(plaintext),
                ApiKey.revoked_at.is_(None),
                Tenant.disabled_at.is_(None),
            )
        )
        return None if tenant_id is None else str(tenant_id)

    def list(self, tenant_id: str) -> list[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
        return list(self.session.scalars(stmt))

    def revoke(self, tenant_id: str, key_id: str) -> ApiKey | None:
        key = self.session.scalar(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
        )
        if key is None:
            return None
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            self.session.flush()
        return key
