"""The evaluation deadline: a stuck evaluation becomes EvaluationTimeout (fail closed)."""

from __future__ import annotations

import time

import pytest

from worker.pipeline import EvaluationTimeout, deadline


def test_deadline_interrupts_a_stuck_evaluation() -> None:
    started = time.monotonic()
    with pytest.raises(EvaluationTimeout), deadline(0.2):
        time.sleep(5)
    assert time.monotonic() - started < 2


def test_deadline_is_disarmed_afterwards() -> None:
    with deadline(0.2):
        pass
    time.sleep(0.3)  # no alarm may fire after the block
    assert EvaluationTimeout.code == "safety_evaluation_timeout"
