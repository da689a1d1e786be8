"""The protocol between the trainer and whoever runs it (the worker: progress, heartbeats, cancel).

The trainer calls, in order: `on_train_start(total_steps)` once, then per optimizer step
`on_step(step, total_steps, metrics)` and `should_stop()`, and `on_checkpoint(step, path)` after
every checkpoint it writes. `should_stop()` returning "pause" makes the trainer save a checkpoint
and raise `TrainingCancelled("pause")`; "cancel" raises `TrainingCancelled("cancel")`, no save;
"deadline" (the runner's time limit passed) saves a checkpoint and raises
`TrainingDeadlineExceeded`; "shutdown" (the worker process is stopping) saves a checkpoint and
raises `TrainingCancelled("shutdown")`; "checkpoint" saves one (unless this step already has one)
and goes on training. sap_core keeps no clock of its own: limits and intervals are the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

StopRequest = Literal["cancel", "pause", "deadline", "shutdown", "checkpoint"]


class TrainingCallback(Protocol):
    """What the worker implements. All methods are called from the training thread."""

    def on_train_start(self, total_steps: int) -> None: ...

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def should_stop(self) -> StopRequest | None: ...


class NullCallback:
    """Does nothing and never stops; the default for scripts and tests."""

    def on_train_start(self, total_steps: int) -> None:
        return None

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        return None

    def on_checkpoint(self, step: int, path: Path) -> None:
        return None

    def should_stop(self) -> StopRequest | None:
        return None
