"""Webhook event types and their payloads. Pure Python.

The three OpenAI events keep OpenAI's payload shape exactly (``openai.types.webhooks``:
``{"id", "object": "event", "created_at", "type", "data": {"id": job_id}}``), so a receiver
written for OpenAI's fine-tuning webhooks parses Keel's with ``client.webhooks.unwrap``. Keel's
own events use the same shape.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum


class JobWebhookEvent(StrEnum):
    SUCCEEDED = "fine_tuning.job.succeeded"
    FAILED = "fine_tuning.job.failed"
    CANCELLED = "fine_tuning.job.cancelled"
    # Keel's: the gate withheld the adapter (sent with fine_tuning.job.failed).
    SAFETY_GATE_FAILED = "fine_tuning.job.safety_gate_failed"
    # The gate failed and the policy holds the adapter for review (with fine_tuning.job.failed).
    QUARANTINED = "fine_tuning.job.quarantined"
    # A provider admin released a quarantined adapter (with fine_tuning.job.succeeded).
    RELEASED = "fine_tuning.job.released"


EVENT_TYPES: tuple[str, ...] = tuple(event.value for event in JobWebhookEvent)


def event_payload(event_id: str, event_type: str, job_id: str, created_at: datetime) -> str:
    """The JSON text of one event: signed and sent byte for byte on every attempt."""
    body = {
        "id": event_id,
        "object": "event",
        "created_at": int(created_at.timestamp()),
        "type": event_type,
        "data": {"id": job_id},
    }
    return json.dumps(body, separators=(",", ":"))
