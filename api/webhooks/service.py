"""Webhook endpoints: register (the URL checked against the policy, a secret shown once),
update, rotate the secret, delete; and their deliveries. Nothing here commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Forbidden, InvalidRequest, NotFound
from api.serializers import unix
from api.webhooks.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from db.base import utcnow
from db.models import Tenant, WebhookDelivery, WebhookEndpoint
from db.policy_schema import PolicyDocument
from db.repositories.policy import PolicyRepository
from db.repositories.webhooks import PENDING, WebhookEndpointRepository
from db.settings import Environment, KeelSettings
from db.webhook_events import EVENT_TYPES, JobWebhookEvent
from db.webhook_targets import (
    AddressRefused,
    TargetRefused,
    check_url,
    checked_addresses,
    parse_ranges,
)


def endpoint_not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No such webhook endpoint: {endpoint_id}", param="id")


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpointRepository(session).get(tenant_id, endpoint_id)
    if endpoint is None:
        raise endpoint_not_found(endpoint_id)
    return endpoint


def check_target(url: str, settings: KeelSettings, policy: PolicyDocument) -> None:
    """400 unless webhooks may go to ``url`` (the worker checks again at every delivery)."""
    try:
        _, host, port = check_url(url, require_https=settings.env == Environment.PRODUCTION)
        checked_addresses(host, port, parse_ranges(policy.webhooks.allowed_private_ranges))
    except AddressRefused as exc:
        raise InvalidRequest(
            f"Invalid 'url': the URL {exc}.", param="url", code="webhook_url_not_allowed"
        ) from None
    except TargetRefused as exc:
        raise InvalidRequest(
            f"Invalid 'url': the URL {exc}.", param="url", code="invalid_webhook_url"
        ) from None


def _events(events: list[JobWebhookEvent] | None) -> list[str]:
    if events is None:
        return list(EVENT_TYPES)
    return list(dict.fromkeys(event.value for event in events))  # deduplicated, in order


def create_endpoint(
    session: Session, settings: KeelSettings, tenant_id: str, body: WebhookEndpointCreate
) -> WebhookEndpoint:
    policy = PolicyRepository(session).current()
    check_target(body.url, settings, policy)
    # The tenant's row lock until commit: two concurrent creates cannot both pass the limit.
    session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
    endpoints = WebhookEndpointRepository(session)
    limit = policy.webhooks.max_endpoints_per_tenant
    if endpoints.count(tenant_id) >= limit:
        raise Forbidden(
            f"Your organization already has {limit} webhook endpoints "
            "(webhooks.max_endpoints_per_tenant); delete one first.",
            param="url",
            code="quota_webhook_endpoints_exceeded",
        )
    return endpoints.add(
        tenant_id,
        url=body.url,
        event_types=_events(body.events),
        enabled=body.enabled,
        description=body.description,
    )


def update_endpoint(
    session: Session,
    settings: KeelSettings,
    tenant_id: str,
    endpoint_id: str,
    body: WebhookEndpointUpdate,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if body.url is not None:
        check_target(body.url, settings, PolicyRepository(session).current())
        endpoint.url = body.url
    if body.events is not None:
        endpoint.event_types = _events(body.events)
    if body.enabled is not None:
        endpoint.enabled = body.enabled
    if "description" in body.model_fields_set:
        endpoint.description = body.description
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def endpoint_object(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    """The endpoint; its secret only when just created or rotated (``secret``)."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "events": list(endpoint.event_types or []),
        "enabled": endpoint.enabled,
        "description": endpoint.description,
        "created_at": unix(endpoint.created_at),
        "updated_at": unix(endpoint.updated_at),
        "secret_rotated_at": unix(endpoint.secret_rotated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_object(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "job_id": delivery.job_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": unix(delivery.created_at),
        "last_attempt_at": unix(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": unix(delivery.next_attempt_at) if delivery.status == PENDING else None,
        "delivered_at": unix(delivery.delivered_at),
        "attempt_log": list(delivery.attempt_log or []),
    }
