"""/v1/models: list, retrieve and delete (the rules and the SQL live in api.models.service)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.dependencies import SessionDep, SettingsDep, TenantDep
from api.models import service

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """List models usable by the caller."""
    return {"object": "list", "data": service.list_models(session, tenant_id)}


@router.get("/{model_id}")
def retrieve_model(model_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """One model usable by the caller: an allowed base model or one of its fine-tuned models."""
    return service.get_model(session, tenant_id, model_id)


@router.delete("/{model_id}")
def delete_model(
    model_id: str, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Delete one of the caller's fine-tuned models and its adapter files."""
    service.delete_model(session, settings.blob_store(), tenant_id, model_id)
    return {"id": model_id, "object": "model", "deleted": True}
