"""Models: base models the policy allows plus the caller's succeeded fine-tuned models.

A fine-tuned model is listed only when its job succeeded, i.e. its adapter passed the safety
gate (or an admin released it from quarantine), and its owner has not deleted it; another
tenant's models are never visible. Deleting a fine-tuned model removes its adapter files; the
job keeps its record, report and `fine_tuned_model` name, as OpenAI's jobs do.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Forbidden, NotFound
from api.serializers import unix
from db.after_commit import after_commit
from db.blobs import BlobStore, job_artifacts_path
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository

log = logging.getLogger("keel.api.models")


def _base_models(session: Session) -> list[dict[str, Any]]:
    policy = PolicyRepository(session).current()
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": "keel"}
        for name in policy.allowed_models
    ]


def _fine_tuned_models(
    session: Session, tenant_id: str, model_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        {"id": name, "object": "model", "created": unix(finished) or 0, "owned_by": tenant_id}
        for name, finished in JobRepository(session).fine_tuned_models(tenant_id, model_id)
    ]


def list_models(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    return _base_models(session) + _fine_tuned_models(session, tenant_id)


def get_model(session: Session, tenant_id: str, model_id: str) -> dict[str, Any]:
    for model in _base_models(session) + _fine_tuned_models(session, tenant_id, model_id):
        if model["id"] == model_id:
            return model
    raise _model_not_found(model_id)


def delete_model(session: Session, store: BlobStore, tenant_id: str, model_id: str) -> None:
    """Mark the caller's fine-tuned model deleted; its bytes go once that commits."""
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
    storage_paths = [file.storage_path for file in adapters]
    job_id = job.id

    def remove_bytes() -> None:
        try:
            for path in storage_paths:
                store.delete(path)
            # The worker's copies of the weights (unpacked adapter, checkpoints) go too: the
            # job is finished, so nothing reads them again.
            store.delete_tree(job_artifacts_path(tenant_id, job_id))
        except Exception:  # OSError locally, botocore errors from a bucket
            # The model is already deleted (committed): its files answer 404 whatever is left
            # on disk, so the client gets its answer and the operator a log line to clean up.
            log.exception(
                "model %s deleted; removing its bytes for job %s failed", model_id, job_id
            )

    # After the commit: were the commit to fail after the bytes were gone, the rows would still
    # promise an adapter. An orphaned blob after a crash between the two is only wasted space.
    after_commit(session, remove_bytes)


def _model_not_found(model_id: str) -> NotFound:
    # Another tenant's model answers exactly like a missing one: ids never leak across tenants.
    return NotFound(f"No such Model object: {model_id}", param="model")
