"""Webhook endpoints (tenant-scoped) and the deliveries outbox (worker and dispatcher side)."""

from __future__ import annotations

import base64
import builtins
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import (
    WEBHOOK_DELIVERY_PREFIX,
    WEBHOOK_ENDPOINT_PREFIX,
    WEBHOOK_EVENT_PREFIX,
    new_id,
)
from db.models import WebhookDelivery, WebhookEndpoint
from db.repositories.pagination import (
    Page,
    fetch_page,
    order_keys,
    page_after,
)
from db.webhook_events import event_payload

SECRET_PREFIX = "whsec_"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# Attempts kept in a delivery's attempt_log (the count in `attempts` is never capped).
ATTEMPT_LOG_SIZE = 20


def new_webhook_secret() -> str:
    """`whsec_` + base64 of 32 random bytes: the Standard Webhooks (and OpenAI) secret format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class WebhookEndpointRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        tenant_id: str,
        *,
        url: str,
        event_types: builtins.list[str],
        enabled: bool,
        description: str | None,
    ) -> WebhookEndpoint:
        now = utcnow()
        endpoint = WebhookEndpoint(
            id=new_id(WEBHOOK_ENDPOINT_PREFIX),
            tenant_id=tenant_id,
            url=url,
            event_types=event_types,
            enabled=enabled,
            description=description,
            secret=new_webhook_secret(),
            created_at=now,
            updated_at=now,
        )
        self.session.add(endpoint)
        self.session.flush()
        return endpoint

    def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        return self.session.scalar(
            select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
            )
        )

    def count(self, tenant_id: str) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(WebhookEndpoint.tenant_id == tenant_id)
            )
            or 0
        )

    def list(self, tenant_id: str, after: str | None, limit: int) -> Page[WebhookEndpoint]:
        """Newest first; `after` is an endpoint id of this tenant."""
        stmt = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(*order_keys(WebhookEndpoint.created_at, WebhookEndpoint.id, descending=True))
        )
        if after is not None:
            stmt = page_after(stmt, self.get(tenant_id, after), after, descending=True)
        return fetch_page(self.session, stmt, limit)

    def rotate_secret(self, endpoint: WebhookEndpoint) -> str:
        """A new secret; deliveries from now on (retries of older ones too) are signed with it."""
        endpoint.secret = new_webhook_secret()
        endpoint.secret_rotated_at = endpoint.updated_at = utcnow()
        self.session.flush()
        return endpoint.secret

    def delete(self, endpoint: WebhookEndpoint) -> None:
        """The endpoint and its deliveries (pending ones are never sent)."""
        self.session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        )
        self.session.delete(endpoint)
        self.session.flush()


class WebhookOutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ in the state change
    def record_job_events(
        self,
        tenant_id: str,
        job_id: str,
        event_types: tuple[str, ...],
        *,
        dispatch_grace: timedelta,
    ) -> builtins.list[str]:
        """One pending delivery per (event, enabled endpoint subscribed to it), in the caller's
        transaction: the outbox rows commit or roll back with the job's state change.

        ``dispatch_grace``: how long the dispatcher leaves a new row to the after-commit handoff
        before it hands the row to the queue itself.
        """
        endpoints = list(
            self.session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True)
                )
            )
        )
        now = utcnow()
        ids: builtins.list[str] = []
        for event_type in event_types:
            subscribed = [e for e in endpoints if event_type in (e.event_types or [])]
            if not subscribed:
                continue
            event_id = new_id(WEBHOOK_EVENT_PREFIX)
            payload = event_payload(event_id, event_type, job_id, now)
            for endpoint in subscribed:
                delivery = WebhookDelivery(
                    id=new_id(WEBHOOK_DELIVERY_PREFIX),
                    tenant_id=tenant_id,
                    endpoint_id=endpoint.id,
                    event_id=event_id,
                    event_type=event_type,
                    job_id=job_id,
                    payload=payload,
                    status=PENDING,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                    dispatch_after=now + dispatch_grace,
                    attempt_log=[],
                )
                self.session.add(delivery)
                ids.append(delivery.id)
        self.session.flush()
        return ids

    # ------------------------------------------------------------------ sender side
    def claim(
        self, delivery_id: str, now: datetime, hold: timedelta
    ) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
        """Compare-and-set: the due, pending, unlocked delivery and its endpoint, now locked for
        ``hold`` (a duplicate or early task message gets None and sends nothing)."""
        claimed = self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                # A second of slack: Celery's countdown and our clock may round differently.
                WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1),
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
            )
            .values(locked_until=now + hold, dispatch_after=now + hold)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        ).first()
        if claimed is None:
            return None
        delivery = self.session.get(WebhookDelivery, delivery_id, populate_existing=True)
        assert delivery is not None
        endpoint = self.session.get(WebhookEndpoint, delivery.endpoint_id)
        assert endpoint is not None  # the FK cascades: no delivery outlives its endpoint
        return delivery, endpoint

    def record_attempt(
        self,
        delivery_id: str,
        *,
        at: datetime,
        status_code: int | None,
        error: str | None,
        outcome: str,
        next_attempt_at: datetime | None = None,
        dispatch_after: datetime | None = None,
    ) -> None:
        """The attempt's result; ``outcome`` pending (with the next attempt's times), delivered
        or failed. Unlocks the row."""
        delivery = self.session.get(WebhookDelivery, delivery_id, populate_existing=True)
        if delivery is None:  # its endpoint was deleted meanwhile
            return
        entry: dict[str, Any] = {
            "at": int(at.timestamp()),
            "status_code": status_code,
            "error": error,
        }
        delivery.attempts += 1
        delivery.attempt_log = [*(delivery.attempt_log or []), entry][-ATTEMPT_LOG_SIZE:]
        delivery.last_attempt_at = at
        delivery.last_status_code = status_code
        delivery.last_error = error[:200] if error else None
        delivery.locked_until = None
        delivery.status = outcome
        if outcome == DELIVERED:
            delivery.delivered_at = at
        if next_attempt_at is not None:
            delivery.next_attempt_at = next_attempt_at
        if dispatch_after is not None:
            delivery.dispatch_after = dispatch_after
        self.session.flush()

    # ------------------------------------------------------------------ dispatcher side
    def take_due_for_dispatch(
        self, now: datetime, redispatch_after: timedelta, limit: int = 500
    ) -> builtins.list[str]:
        """Pending deliveries whose handoff is overdue (lost, or never made), pushed
        ``redispatch_after`` into the future so the next pass does not send them again at once.

        Rows are locked with SKIP LOCKED on Postgres: two dispatchers take disjoint rows.
        """
        ids = list(
            self.session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.dispatch_after <= now,
                    or_(
                        WebhookDelivery.locked_until.is_(None),
                        WebhookDelivery.locked_until < now,
                    ),
                )
                .order_by(WebhookDelivery.dispatch_after)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            self.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(dispatch_after=now + redispatch_after)
                .execution_options(synchronize_session=False)
            )
        return ids

    # ------------------------------------------------------------------ tenant reads
    def get(self, tenant_id: str, delivery_id: str) -> WebhookDelivery | None:
        return self.session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id == delivery_id
            )
        )

    def list_for_endpoint(
        self, tenant_id: str, endpoint_id: str, after: str | None, limit: int
    ) -> Page[WebhookDelivery]:
        """Newest first; `after` is a delivery id of this endpoint."""
        stmt = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.endpoint_id == endpoint_id,
            )
            .order_by(*order_keys(WebhookDelivery.created_at, WebhookDelivery.id, descending=True))
        )
        if after is not None:
            cursor = self.get(tenant_id, after)
            if cursor is not None and cursor.endpoint_id != endpoint_id:
                cursor = None  # another endpoint's delivery is no cursor here
            stmt = page_after(stmt, cursor, after, descending=True)
        return fetch_page(self.session, stmt, limit)
