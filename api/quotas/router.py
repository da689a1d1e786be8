"""/v1/usage: the caller's use of each quota of the provider policy, and its limit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.dependencies import SessionDep, TenantDep
from api.quotas import service
from db.repositories.policy import PolicyRepository

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("")
def get_usage(session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Active jobs, tokens trained in the last 24 hours and stored bytes, with their limits."""
    return service.usage_object(session, tenant_id, PolicyRepository(session).current())
