"""/v1/models: base models the policy allows plus the caller's succeeded fine-tuned models.

A fine-tuned model is listed only when its job succeeded, i.e. its adapter passed the safety
gate (or an admin released it from quarantine); another tenant's models are never visible.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.dependencies import SessionDep, TenantDep
from api.errors import NotFound
from api.serializers import unix
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.policy import PolicyRepository

router = APIRouter(prefix="/v1/models", tags=["models"])


def _base_models(session: SessionDep) -> list[dict[str, Any]]:
    policy = PolicyRepository(session).current()
    return [
        {"id": str(name), "object": "model", "created": 0, "owned_by": "keel"}
        for name in policy.get("allowed_models", [])
    ]


def _fine_tuned_models(
    session: SessionDep, tenant_id: str, model_id: str | None = None
) -> list[dict[str, Any]]:
    query = select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at).where(
        FineTuningJob.tenant_id == tenant_id,
        FineTuningJob.status == JobStatus.SUCCEEDED.value,
        FineTuningJob.fine_tuned_model.is_not(None),
    )
    if model_id is not None:
        query = query.where(FineTuningJob.fine_tuned_model == model_id)
    rows = session.execute(query.order_by(FineTuningJob.finished_at.desc()))
    return [
        {"id": name, "object": "model", "created": unix(finished) or 0, "owned_by": tenant_id}
        for name, finished in rows
    ]


@router.get("")
def list_models(session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """List models usable by the caller."""
    return {
        "object": "list",
        "data": _base_models(session) + _fine_tuned_models(session, tenant_id),
    }


@router.get("/{model_id}")
def retrieve_model(model_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """One model usable by the caller: an allowed base model or one of its fine-tuned models."""
    for model in _base_models(session) + _fine_tuned_models(session, tenant_id, model_id):
        if model["id"] == model_id:
            return model
    raise NotFound(f"No such Model object: {model_id}", param="model")
