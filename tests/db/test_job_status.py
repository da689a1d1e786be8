from __future__ import annotations

import pytest

from db.job_status import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    JobStatus,
    can_transition,
    is_terminal,
)


def test_terminal_states_are_absorbing() -> None:
    for status in TERMINAL_STATUSES:
        assert is_terminal(status)
        assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_every_status_has_a_transition_entry() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("validating_files", "queued", True),
        ("queued", "running", True),
        ("running", "pausing", True),
        ("pausing", "paused", True),
        ("paused", "queued", True),
        ("queued", "succeeded", False),
        ("succeeded", "running", False),
        ("cancelled", "queued", False),
    ],
)
def test_transitions(current: str, target: str, allowed: bool) -> None:
    assert can_transition(current, target) is allowed


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="cancelling"):
        is_terminal("cancelling")
