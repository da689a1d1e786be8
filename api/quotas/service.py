"""Per-tenant quotas (policy `quotas`): checked under the tenant's row lock where they are used.

`check_job_quotas` runs in the job-create transaction and `check_storage_quota` in the upload's,
each after `UsageRepository.lock_tenant`: the lock lasts until that request commits, so two
concurrent requests cannot both count the same last free slot (db.repositories.usage).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import AppError
from db.base import utcnow
from db.policy_schema import PolicyDocument
from db.repositories.usage import TOKEN_WINDOW, UsageRepository


class QuotaExceeded(AppError):
    status_code = 429
    code = "quota_exceeded"
    type = "rate_limit_error"


class StorageQuotaExceeded(AppError):
    status_code = 403
    code = "quota_storage_exceeded"
    type = "permission_error"


def check_job_quotas(session: Session, tenant_id: str, policy: PolicyDocument) -> None:
    """Lock the tenant, then refuse a new job past its active-job or daily-token quota (429)."""
    quotas = policy.quotas
    usage = UsageRepository(session)
    usage.lock_tenant(tenant_id)
    if quotas.max_active_jobs is not None:
        active = usage.active_jobs(tenant_id)
        if active >= quotas.max_active_jobs:
            raise QuotaExceeded(
                f"Your organization has {active} fine-tuning jobs not yet finished; the "
                f"limit is {quotas.max_active_jobs}. Wait for one to finish or cancel one.",
                code="quota_active_jobs_exceeded",
            )
    if quotas.max_trained_tokens_per_day is not None:
        used = usage.trained_tokens_since(tenant_id, utcnow() - TOKEN_WINDOW)
        if used >= quotas.max_trained_tokens_per_day:
            raise QuotaExceeded(
                f"Your organization trained {used} tokens in the last 24 hours; the limit is "
                f"{quotas.max_trained_tokens_per_day}.",
                code="quota_trained_tokens_exceeded",
            )


def check_storage_quota(
    session: Session, tenant_id: str, policy: PolicyDocument, new_bytes: int
) -> None:
    """Lock the tenant, then refuse an upload that would pass its stored-bytes quota (403)."""
    limit = policy.quotas.max_stored_bytes
    if limit is None:
        return
    usage = UsageRepository(session)
    usage.lock_tenant(tenant_id)
    stored = usage.stored_bytes(tenant_id)
    if stored + new_bytes > limit:
        raise StorageQuotaExceeded(
            f"Storing this file ({new_bytes} bytes) would bring your organization's files to "
            f"{stored + new_bytes} bytes; the limit is {limit}. Delete files you no longer need.",
            param="file",
        )


def usage_object(session: Session, tenant_id: str, policy: PolicyDocument) -> dict[str, Any]:
    """GET /v1/usage: each quota's use and limit (null: no limit)."""
    used = UsageRepository(session).usage(tenant_id)
    quotas = policy.quotas
    return {
        "object": "usage",
        "active_jobs": {"used": used.active_jobs, "limit": quotas.max_active_jobs},
        "trained_tokens_per_day": {
            "used": used.trained_tokens_24h,
            "limit": quotas.max_trained_tokens_per_day,
            "window_seconds": int(TOKEN_WINDOW.total_seconds()),
        },
        "stored_bytes": {"used": used.stored_bytes, "limit": quotas.max_stored_bytes},
    }
