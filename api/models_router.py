"""/v1/models: base models the policy allows plus the caller's succeeded fine-tuned models.

A fine-tuned model is listed only when its job succeeded, i.e. its adapter passed the safety
gate (or an admin released it from quarantine), and its owner has not deleted it; another
tenant's models are never visible. Deleting a fine-tuned model removes its adapter files; the
job keeps its record, report and `fine_tuned_model` name, as OpenAI's jobs do.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.dependencies import SessionDep, SettingsDep, TenantDep
from api.errors import Forbidden, NotFound
from api.serializers import unix
from db.blobs import BlobStore, job_artifacts_path
from db.job_status import JobStatus
from db.models import FineTuningJob
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])


def _base_models(session: SessionDep) -> list[dict[str, Any]]:
    policy = PolicyRepository(session).current()
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": "keel"}
        for name in policy.allowed_models
    ]


def _fine_tuned_models(
    session: SessionDep, tenant_id: str, model_id: str | None = None
) -> list[dict[str, Any]]:
    query = select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at).where(
        FineTuningJob.tenant_id == tenant_id,
        FineTuningJob.status == JobStatus.SUCCEEDED.value,
        FineTuningJob.fine_tuned_model.is_not(None),
        FineTuningJob.model_deleted_at.is_(None),
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
    raise _model_not_found(model_id)


@router.delete("/{model_id}")
def delete_model(
    model_id: str, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Delete one of the caller's fine-tuned models and its adapter files."""
    if any(model["id"] == model_id for model in _base_models(session)):
        raise Forbidden(
            f"{model_id} is a base model; only your own fine-tuned models can be deleted.",
            code="model_not_deletable",
            param="model",
        )
    job = JobRepository(session).mark_model_deleted(tenant_id, model_id)
    if job is None:
        raise _model_not_found(model_id)
    adapters = FileRepository(session).soft_delete_job_results(tenant_id, job.id)
    EventRepository(session).append(
        job.id, tenant_id, f"Fine-tuned model {model_id} deleted; adapter files removed"
    )
    # Commit first: were the commit to fail after the bytes were gone, the rows would still
    # promise an adapter. An orphaned blob after a crash here is only wasted space.
    session.commit()
    store = BlobStore(settings.data_dir)
    try:
        for file in adapters:
            store.delete(file.storage_path)
        # The worker's copies of the weights (unpacked adapter, checkpoints) go too: the job is
        # finished, so nothing reads them again.
        store.delete_tree(job_artifacts_path(tenant_id, job.id))
    except OSError:
        # The model is already deleted (committed): its files answer 404 whatever is left on
        # disk, so the client gets its answer and the operator a log line to clean up.
        log.exception("model %s deleted; removing its bytes for job %s failed", model_id, job.id)
    return {"id": model_id, "object": "model", "deleted": True}


def _model_not_found(model_id: str) -> NotFound:
    # Another tenant's model answers exactly like a missing one: ids never leak across tenants.
    return NotFound(f"No such Model object: {model_id}", param="model")
