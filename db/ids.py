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


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"
