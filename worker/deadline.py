"""A training deadline as a TrainingCallback wrapper: the policy's limit, the worker's clock.

sap_core reads neither policy nor environment; the worker wraps its progress callback in
`TrainingDeadline`, whose `should_stop` answers "deadline" once the job's training time passes
the limit (policy `training.max_training_seconds`). The trainer then saves a checkpoint and
raises TrainingDeadlineExceeded, which the runner turns into a failed job with code
`training_deadline_exceeded`; its checkpoints stay.

The time counted is this attempt's wall clock since training started plus the step time of the
steps a resumed checkpoint already holds (its history's `step_time`), so pausing and resuming
does not restart the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sap_core.callbacks import StopRequest, TrainingCallback


def spent_in(history: Sequence[dict[str, float]]) -> float:
    """Seconds of training a checkpoint's step history records."""
    return float(sum(row.get("step_time", 0.0) for row in history))


class TrainingDeadline:
    """Delegates to `inner`; its stop requests (cancel, pause) win over the deadline."""

    def __init__(
        self,
        inner: TrainingCallback,
        seconds: float,
        *,
        already_spent: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.seconds = seconds
        self.already_spent = already_spent
        self.clock = clock
        self._started: float | None = None

    @property
    def spent(self) -> float:
        """Training seconds so far (earlier attempts included)."""
        running = 0.0 if self._started is None else self.clock() - self._started
        return self.already_spent + running

    def on_train_start(self, total_steps: int) -> None:
        self._started = self.clock()
        self.inner.on_train_start(total_steps)

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.inner.on_step(step, total_steps, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.inner.on_checkpoint(step, path)

    def should_stop(self) -> StopRequest | None:
        request = self.inner.should_stop()
        if request is not None and request != "checkpoint":
            return request
        # A passed deadline wins over a routine checkpoint (it saves one anyway).
        return "deadline" if self.spent > self.seconds else request
