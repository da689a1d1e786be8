"""ORM rows → OpenAI-shaped JSON objects (ids, unix-second timestamps, list envelopes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from db.models import File, FineTuningJob, JobCheckpoint, JobEvent

T = TypeVar("T")


def unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def list_object(
    items: Sequence[T], render: Callable[[T], dict[str, Any]], has_more: bool, *, ids: bool = True
) -> dict[str, Any]:
    data = [render(item) for item in items]
    body: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if ids:
        body["first_id"] = data[0]["id"] if data else None
        body["last_id"] = data[-1]["id"] if data else None
    return body


def file_object(file: File) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": unix(file.created_at),
        "expires_at": None,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": file.status,
        "status_details": None,
        "sha256": file.sha256,
        "format": file.format,
        "row_count": file.row_count,
    }


def job_object(job: FineTuningJob) -> dict[str, Any]:
    error = None
    if job.error_code is not None:
        error = {
            "code": job.error_code,
            "message": job.error_message or "",
            "param": job.error_param,
        }
    hyperparameters = dict(job.hyperparameters or {})
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": unix(job.created_at),
        "error": error,
        "estimated_finish": unix(job.estimated_finish),
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": unix(job.finished_at),
        "hyperparameters": hyperparameters,
        "integrations": job.integrations or [],
        "metadata": job.metadata_,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "model": job.model,
        "organization_id": job.tenant_id,
        "result_files": list(job.result_files or []),
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file_id,
        "validation_file": job.validation_file_id,
        "user_provided_suffix": job.suffix,
        "safety": job.safety,
        "progress": job.progress,
    }


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": unix(event.created_at),
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_object(checkpoint: JobCheckpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": unix(checkpoint.created_at),
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "metrics": checkpoint.metrics,
        "step_number": checkpoint.step_number,
    }
