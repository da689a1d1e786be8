"""Screening results cached by the screened bytes (issue 23): a file is screened once per
tenant, content and screening configuration, off the API process (worker.validation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, JSONType, UTCDateTime, utcnow


class FileScreening(Base):
    """One finished screening of some bytes (``sha256``) under one screening configuration.

    ``fingerprint`` covers the screener (its code, lexicon and reference data) and the policy's
    `screening` section, so a new screener or a policy change is a cache miss. Keyed by tenant
    too: a shared entry would tell a tenant that another one had uploaded the same bytes (a hit
    answers at once, a miss answers 202).
    """

    __tablename__ = "file_screening"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # screening.ScreeningDecision.to_dict() under the limits the fingerprint covers.
    decision: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Per-row results (line numbers, scores, categories; never text).
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
