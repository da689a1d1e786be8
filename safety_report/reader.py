"""Reading a stored safety report: versioned, so older layouts keep loading.

A report carries ``schema_version`` (reports from before the field, and the gate-only record
of a failed evaluation, have none: they are version 1). Each older version has an upgrade to
the next; version 1 is the current layout. A version newer than this code knows is read as the
current one -- the models are open, so whatever it added is kept, not lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from safety_report.models import REPORT_SCHEMA_VERSION, SafetyReport

# version -> function turning a report of that version into one of version + 1.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class ReportFormatError(ValueError):
    """A stored report that is not a JSON object of the report's shape."""


def read_report(raw: Mapping[str, Any] | SafetyReport) -> SafetyReport:
    """The typed report from its stored JSON (any known version)."""
    if isinstance(raw, SafetyReport):
        return raw
    if not isinstance(raw, Mapping):
        raise ReportFormatError(f"a safety report is a JSON object, not {type(raw).__name__}")
    data = dict(raw)
    version = data.get("schema_version")
    if version is None:
        version = 1
    if not isinstance(version, int) or version < 1:
        raise ReportFormatError(f"schema_version must be a positive integer, got {version!r}")
    while version < REPORT_SCHEMA_VERSION:
        data = _UPGRADES[version](data)
        version += 1
    try:
        return SafetyReport.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ReportFormatError(f"not a safety report: {exc}") from None
