"""Object ids in the OpenAI style: a type prefix plus 24 random hex characters."""

from __future__ import annotations

import secrets

TENANT_PREFIX = "org-"
API_KEY_PREFIX = "key_"
FILE_PREFIX = "file-"
JOB_PREFIX = "ftjob-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt_"
ARTIFACT_PREFIX = "art_"
REPORT_PREFIX = "safrep_"
POLICY_PREFIX = "pol_"
ADMIN_KEY_PREFIX = "adk_"
AUDIT_PREFIX = "audit_"
WEBHOOK_ENDPOINT_PREFIX = "we_"
# The webhook-id header (OpenAI's deliveries use "wh_…") and the event id in the payload.
WEBHOOK_DELIVERY_PREFIX = "wh_"
WEBHOOK_EVENT_PREFIX = "evt_"


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"
