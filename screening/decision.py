"""Whether a screened training file may be trained on: the policy's limits, applied to counts.

Two limits, both inclusive ("at most"): a fraction of the rows, and an absolute number of rows.
The fraction alone is diluted by padding — 50 harmful rows hide under a 5 % limit in a file of
1,000 benign ones — so the absolute cap bounds what any file can carry however large it is.
A file is rejected when it exceeds either; the reason names the limit it broke (the row cap
first when both are broken, since padding cannot move it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from screening.screen import ScreenSummary

LimitName = Literal["max_flagged_rows", "max_flagged_fraction"]


@dataclass(frozen=True)
class ScreeningLimits:
    """``max_flagged_fraction`` in [0, 1]; ``max_flagged_rows`` >= 0, or None for no row cap."""

    max_flagged_fraction: float
    max_flagged_rows: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_flagged_fraction <= 1.0:
            raise ValueError(
                f"max_flagged_fraction must be in [0, 1], got {self.max_flagged_fraction}"
            )
        if self.max_flagged_rows is not None and self.max_flagged_rows < 0:
            raise ValueError(f"max_flagged_rows must be >= 0, got {self.max_flagged_rows}")


@dataclass(frozen=True)
class ScreeningDecision:
    rejected: bool
    # The limit the file broke, None when accepted.
    limit: LimitName | None
    flagged_count: int
    rows: int
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rejected": self.rejected,
            "limit": self.limit,
            "flagged_count": self.flagged_count,
            "rows": self.rows,
            "message": self.message,
        }


def decide(
    summary: ScreenSummary,
    limits: ScreeningLimits,
    flagged_lines: tuple[int, ...] = (),
) -> ScreeningDecision:
    """Reject when flagged rows exceed ``limits.max_flagged_rows`` or the fraction limit.

    ``flagged_lines`` (1-based, as in the results) are quoted in the message, the first ten.
    """
    count, rows = summary.flagged_count, summary.rows
    limit: LimitName | None = None
    allowed = ""
    if limits.max_flagged_rows is not None and count > limits.max_flagged_rows:
        limit = "max_flagged_rows"
        allowed = f"at most {limits.max_flagged_rows} flagged rows"
    elif summary.flagged_fraction > limits.max_flagged_fraction:
        limit = "max_flagged_fraction"
        allowed = f"at most {limits.max_flagged_fraction:.0%} of rows flagged"
    if limit is None:
        return ScreeningDecision(False, None, count, rows, None)
    categories = ", ".join(sorted(summary.per_category)) or "harmful_request"
    turns = " and ".join(f"{n} by {role} turn" for role, n in sorted(summary.per_turn.items()))
    lines = ", ".join(str(line) for line in flagged_lines[:10])
    message = (
        f"{count} of {rows} examples were flagged ({categories}"
        + (f"; {turns}" if turns else "")
        + f"); the policy's {limit} allows {allowed}."
        + (f" First flagged lines: {lines}." if lines else "")
    )
    return ScreeningDecision(True, limit, count, rows, message)
