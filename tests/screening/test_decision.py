"""The screening decision: a fraction limit and an absolute row cap, each named when broken."""

from __future__ import annotations

import pytest

from screening import ScreenSummary
from screening.decision import ScreeningLimits, decide


def _summary(flagged: int, rows: int) -> ScreenSummary:
    return ScreenSummary(
        rows=rows,
        flagged_count=flagged,
        flagged_fraction=flagged / rows if rows else 0.0,
        per_category={"weapons_explosives": flagged} if flagged else {},
        per_turn={"assistant": flagged} if flagged else {},
    )


LIMITS = ScreeningLimits(max_flagged_fraction=0.05, max_flagged_rows=10)


def test_padding_does_not_dilute_the_row_cap() -> None:
    # 100 flagged rows in 10,100: under 5 %, so the fraction alone accepts the file.
    summary = _summary(100, 10_100)
    assert not decide(summary, ScreeningLimits(max_flagged_fraction=0.05)).rejected
    decision = decide(summary, LIMITS, flagged_lines=tuple(range(1, 101)))
    assert decision.rejected
    assert decision.limit == "max_flagged_rows"
    assert decision.message is not None
    assert "max_flagged_rows allows at most 10 flagged rows" in decision.message
    assert "100 by assistant turn" in decision.message
    assert "First flagged lines: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10." in decision.message


def test_fraction_limit_still_applies_under_the_cap() -> None:
    decision = decide(_summary(6, 100), LIMITS)
    assert decision.rejected
    assert decision.limit == "max_flagged_fraction"
    assert decision.message is not None
    assert "at most 5% of rows flagged" in decision.message


@pytest.mark.parametrize(("flagged", "rows"), [(0, 0), (0, 50), (5, 100), (10, 1000)])
def test_at_the_limits_is_accepted(flagged: int, rows: int) -> None:
    decision = decide(_summary(flagged, rows), LIMITS)
    assert not decision.rejected
    assert decision.limit is None
    assert decision.message is None
    assert decision.to_dict()["flagged_count"] == flagged


def test_row_cap_is_reported_first_when_both_are_broken() -> None:
    assert decide(_summary(50, 100), LIMITS).limit == "max_flagged_rows"


def test_zero_cap_rejects_any_flagged_row() -> None:
    strict = ScreeningLimits(max_flagged_fraction=1.0, max_flagged_rows=0)
    assert decide(_summary(1, 1_000_000), strict).limit == "max_flagged_rows"
    assert not decide(_summary(0, 1_000_000), strict).rejected


@pytest.mark.parametrize(("fraction", "rows"), [(-0.1, None), (1.5, None), (0.05, -1)])
def test_invalid_limits_are_refused(fraction: float, rows: int | None) -> None:
    with pytest.raises(ValueError, match="max_flagged"):
        ScreeningLimits(max_flagged_fraction=fraction, max_flagged_rows=rows)
