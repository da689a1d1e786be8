"""Webhook endpoints (a tenant's receivers) and webhook deliveries (the transactional outbox).

A delivery row is written in the same transaction as the job state change it announces, so a
state change is never committed without its webhooks, nor a webhook sent for a change that
rolled back. Its id is the `webhook-id` header on every attempt; its payload is the exact body
signed and sent on every attempt. Receivers' response bodies are never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, JSONType, UTCDateTime, utcnow


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(200))
    # `whsec_` + base64 of 32 random bytes. Kept as is: signing needs the key itself (the
    # customer's receiver holds the same one); it is shown only in the create and rotate
    # responses.
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at"),
        Index("ix_webhook_delivery_status_dispatch_after", "status", "dispatch_after"),
    )

    # "wh_…": the webhook-id header, the same on every retry (receivers deduplicate on it).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    # "evt_…": the event's id inside the payload, shared by every endpoint it went to.
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64))
    # The exact JSON text that is signed and sent on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    # pending → delivered | failed (gave up, or the destination was refused).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the next attempt is due.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the dispatcher may hand the row (again) to Celery: a handoff that was lost (worker
    # killed after the commit, broker down, a task lost with its worker) is retried after it.
    dispatch_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # An attempt in flight holds the row until then (two deliveries of one task never both send).
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    # Keel's own short description of the last failure ("timeout", "HTTP 500", …), never the
    # receiver's response body.
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The most recent attempts: [{"at": unix, "status_code": int | None, "error": str | None}].
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
