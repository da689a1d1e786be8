"""The provider policy: versioned rows, the latest wins; the policy file when there are none.

Readers get a typed `PolicyDocument` (defaults filled in, db.policy_schema); the rows and the
admin API keep only what the provider set (`stored_policy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import POLICY_PREFIX, new_id
from db.models import ProviderPolicy
from db.policy_schema import PolicyDocument, PolicyError, parse_policy, stored_policy
from db.settings import get_settings


def load_policy_file(path: Path) -> PolicyDocument:
    """The policy file, validated (ValueError naming the file and the field when it is bad)."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        return parse_policy(loaded)
    except PolicyError as exc:
        raise ValueError(f"policy file {path}: {exc.param}: {exc.message}") from None


class PolicyRepository:
    def __init__(self, session: Session, default_file: Path | None = None) -> None:
        self.session = session
        self.default_file = default_file

    def current(self) -> PolicyDocument:
        return self.current_versioned()[1]

    def current_versioned(self) -> tuple[int, PolicyDocument]:
        """(version, policy); version 0 means the defaults from the policy file."""
        row = self.session.scalar(
            select(ProviderPolicy).order_by(ProviderPolicy.version.desc()).limit(1)
        )
        if row is not None:
            # Stored versions validated when they were set; parsing again fills in the defaults.
            return row.version, parse_policy(dict(row.policy))
        path = self.default_file or get_settings().resolved_policy_file
        return 0, load_policy_file(path)

    def set(self, policy: dict[str, Any] | PolicyDocument) -> int:
        """Store ``policy`` as the next version (PolicyError when it does not validate)."""
        stored = stored_policy(parse_policy(policy))
        latest = self.session.scalar(select(func.max(ProviderPolicy.version))) or 0
        row = ProviderPolicy(
            id=new_id(POLICY_PREFIX), version=latest + 1, policy=stored, created_at=utcnow()
        )
        self.session.add(row)
        self.session.flush()
        return row.version
