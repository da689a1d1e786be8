"""Every table, imported here so Alembic autogenerate sees them all."""

from db.models.admin import AdminKey, AuditEvent
from db.models.file import File, FilePurpose, FileStatus
from db.models.job import FineTuningJob, JobCheckpoint, JobEvent
from db.models.safety import Artifact, ProviderPolicy, SafetyReport, Verdict
from db.models.screening import FileScreening
from db.models.tenant import ApiKey, Tenant
from db.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = [
    "AdminKey",
    "AuditEvent",
    "ApiKey",
    "Artifact",
    "File",
    "FilePurpose",
    "FileScreening",
    "FileStatus",
    "FineTuningJob",
    "JobCheckpoint",
    "JobEvent",
    "ProviderPolicy",
    "SafetyReport",
    "Tenant",
    "Verdict",
    "WebhookDelivery",
    "WebhookEndpoint",
]
