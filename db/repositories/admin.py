"""Named admin keys and the audit trail. Keys are shown once; only their sha256 is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import ADMIN_KEY_PREFIX, AUDIT_PREFIX, new_id
from db.models import AdminKey, AuditEvent
from db.repositories.pagination import InvalidCursorError
from db.repositories.secret_keys import hash_api_key, mark_used, mint_key

ADMIN_KEY_SCHEME = "sk-keel-admin-"


class AdminKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(self, name: str, created_by: str) -> tuple[AdminKey, str]:
        """A new key for the admin `name`; returns the row and the plaintext (never stored)."""
        minted = mint_key(ADMIN_KEY_SCHEME)
        key = AdminKey(
            id=new_id(ADMIN_KEY_PREFIX),
            name=name,
            key_hash=minted.key_hash,
            key_prefix=minted.key_prefix,
            created_by=created_by,
            created_at=utcnow(),
        )
        self.session.add(key)
        self.session.flush()
        return key, minted.plaintext

    def authenticate(self, plaintext: str, now: datetime | None = None) -> str | None:
        """The admin name of a live key, else None."""
        found = self.identify(plaintext, now)
        return None if found is None else found[1]

    def identify(self, plaintext: str, now: datetime | None = None) -> tuple[str, str] | None:
        """(key id, admin name) of a live key, else None."""
        now = now or utcnow()
        row = self.session.execute(
            select(AdminKey.id, AdminKey.name, AdminKey.last_used_at).where(
                AdminKey.key_hash == hash_api_key(plaintext), AdminKey.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        mark_used(self.session, AdminKey, row.id, row.last_used_at, now)
        return str(row.id), str(row.name)

    def live_name(self, key_id: str) -> str | None:
        """The admin name of key `key_id` while it is live, else None."""
        name = self.session.scalar(
            select(AdminKey.name).where(AdminKey.id == key_id, AdminKey.revoked_at.is_(None))
        )
        return None if name is None else str(name)

    def get(self, key_id: str) -> AdminKey | None:
        return self.session.get(AdminKey, key_id)

    def list(self) -> list[AdminKey]:
        return list(self.session.scalars(select(AdminKey).order_by(AdminKey.created_at)))

    def revoke(self, key_id: str) -> AdminKey | None:
        key = self.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            self.session.flush()
        return key


class AuditRepository:
    """Append-only: rows are added and read, never changed."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        actor: str,
        action: str,
        target_type: str,
        target_id: str | None,
        data: dict[str, Any] | None = None,
    ) -> AuditEvent:
        event = AuditEvent(
            id=new_id(AUDIT_PREFIX),
            created_at=utcnow(),
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            data=data,
        )
        self.session.add(event)
        self.session.flush()
        return event

    def list(
        self, after: str | None, limit: int, target_id: str | None = None
    ) -> tuple[list[AuditEvent], bool]:
        """Oldest first, `limit` events after the event `after`; (events, has_more)."""
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        if target_id is not None:
            stmt = stmt.where(AuditEvent.target_id == target_id)
        if after is not None:
            cursor = self.session.scalar(select(AuditEvent.seq).where(AuditEvent.id == after))
            if cursor is None:
                raise InvalidCursorError(after)
            stmt = stmt.where(AuditEvent.seq > cursor)
        rows = list(self.session.scalars(stmt.limit(limit + 1)))
        return rows[:limit], len(rows) > limit
