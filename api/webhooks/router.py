"""/v1/webhook_endpoints: register, list, retrieve, update, rotate secret, delete; deliveries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.dependencies import PageDep, SessionDep, SettingsDep, TenantDep
from api.files.router import invalid_cursor
from api.serializers import list_object
from api.webhooks import service
from api.webhooks.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from db.repositories.pagination import InvalidCursorError
from db.repositories.webhooks import WebhookEndpointRepository, WebhookOutboxRepository

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])


@router.post("")
def create_endpoint(
    body: WebhookEndpointCreate, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Register a webhook endpoint; the response holds its signing secret (shown only here)."""
    endpoint = service.create_endpoint(session, settings, tenant_id, body)
    return service.endpoint_object(endpoint, secret=endpoint.secret)


@router.get("")
def list_endpoints(session: SessionDep, tenant_id: TenantDep, page: PageDep) -> dict[str, Any]:
    """List the caller's webhook endpoints, newest first."""
    try:
        result = WebhookEndpointRepository(session).list(tenant_id, page.after, page.limit)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, service.endpoint_object, result.has_more)


@router.get("/{endpoint_id}")
def retrieve_endpoint(
    endpoint_id: str, session: SessionDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Retrieve a webhook endpoint (without its secret)."""
    return service.endpoint_object(service.get_endpoint(session, tenant_id, endpoint_id))


@router.post("/{endpoint_id}")
def update_endpoint(
    endpoint_id: str,
    body: WebhookEndpointUpdate,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
) -> dict[str, Any]:
    """Update a webhook endpoint: url, events, enabled, description."""
    endpoint = service.update_endpoint(session, settings, tenant_id, endpoint_id, body)
    return service.endpoint_object(endpoint)


@router.post("/{endpoint_id}/rotate_secret")
def rotate_secret(endpoint_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Replace the endpoint's signing secret; the response holds the new one (shown only here)."""
    endpoint = service.get_endpoint(session, tenant_id, endpoint_id)
    secret = WebhookEndpointRepository(session).rotate_secret(endpoint)
    return service.endpoint_object(endpoint, secret=secret)


@router.delete("/{endpoint_id}")
def delete_endpoint(endpoint_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Delete a webhook endpoint and its deliveries."""
    endpoint = service.get_endpoint(session, tenant_id, endpoint_id)
    WebhookEndpointRepository(session).delete(endpoint)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


@router.get("/{endpoint_id}/deliveries")
def list_deliveries(
    endpoint_id: str, session: SessionDep, tenant_id: TenantDep, page: PageDep
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first: status, attempts, status codes, timestamps."""
    service.get_endpoint(session, tenant_id, endpoint_id)
    try:
        result = WebhookOutboxRepository(session).list_for_endpoint(
            tenant_id, endpoint_id, page.after, page.limit
        )
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, service.delivery_object, result.has_more)
