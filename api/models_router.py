"""/v1/models: base models the policy allows plus the caller's succeeded fine-tuned models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.dependencies import SessionDep, TenantDep
from api.serializers import unix
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.policy import PolicyRepository

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """List models usable by the caller."""
    policy = PolicyRepository(session).current()
    data: list[dict[str, Any]] = [
        {"id": str(name), "object": "model", "created": 0, "owned_by": "keel"}
        for name in policy.get("allowed_models", [])
    ]
    rows = session.execute(
        select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at)
        .where(
            FineTuningJob.tenant_id == tenant_id,
            FineTuningJob.status == JobStatus.SUCCEEDED.value,
            FineTuningJob.fine_tuned_model.is_not(None),
        )
        .order_by(FineTuningJob.finished_at.desc())
    )
    data.extend(
        {"id": name, "object": "model", "created": unix(finished) or 0, "owned_by": tenant_id}
        for name, finished in rows
    )
    return {"object": "list", "data": data}
