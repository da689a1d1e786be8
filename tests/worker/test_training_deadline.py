"""worker.deadline.TrainingDeadline: the policy's training time limit on the worker's clock."""

from __future__ import annotations

from pathlib import Path

from sap_core.callbacks import StopRequest
from worker.deadline import TrainingDeadline, spent_in


class Inner:
    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self.calls: list[str] = []

    def on_train_start(self, total_steps: int) -> None:
        self.calls.append("start")

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.calls.append(f"step {step}")

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.calls.append(f"checkpoint {step}")

    def should_stop(self) -> StopRequest | None:
        return self.request


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_passes_after_the_limit_and_not_before() -> None:
    inner, clock = Inner(), Clock()
    deadline = TrainingDeadline(inner, 60.0, clock=clock)
    deadline.on_train_start(10)
    deadline.on_step(1, 10, {})
    deadline.on_checkpoint(1, Path("c"))
    assert inner.calls == ["start", "step 1", "checkpoint 1"]
    clock.now += 60.0
    assert deadline.should_stop() is None
    clock.now += 0.5
    assert deadline.should_stop() == "deadline"


def test_a_cancel_or_pause_wins_over_the_deadline() -> None:
    inner, clock = Inner(), Clock()
    deadline = TrainingDeadline(inner, 1.0, clock=clock)
    deadline.on_train_start(10)
    clock.now += 5.0
    inner.request = "pause"
    assert deadline.should_stop() == "pause"
    inner.request = "cancel"
    assert deadline.should_stop() == "cancel"


def test_time_an_earlier_attempt_trained_counts_after_a_resume() -> None:
    history = [{"step": 1.0, "step_time": 20.0}, {"step": 2.0, "step_time": 25.0}, {"step": 3.0}]
    assert spent_in(history) == 45.0
    inner, clock = Inner(), Clock()
    deadline = TrainingDeadline(inner, 60.0, already_spent=spent_in(history), clock=clock)
    deadline.on_train_start(10)
    clock.now += 14.0
    assert deadline.should_stop() is None
    clock.now += 2.0
    assert deadline.should_stop() == "deadline"
    assert deadline.spent == 61.0
