"""Graceful shutdown of a running job: SIGTERM checkpoints, releases the lease, re-enqueues.

Before this, SIGTERM to a worker (``keel serve`` stopping, ``docker stop``, a deploy) let Celery's
warm shutdown wait for the job; the supervisor killed it after its grace period and the job
stayed ``running`` until its lease expired (minutes). Now:

- Celery's main process, on its warm shutdown, forwards SIGTERM to its pool children
  (`forward_to_pool_children`, wired in worker.tasks) — Celery itself never tells them.
- The child running a job has `GracefulShutdown` installed for the job's duration. In the
  training phase the SIGTERM only sets a flag: the trainer stops at the next step boundary with a
  checkpoint (the progress callback asks for ``"shutdown"``). In any other phase (setup, saving,
  evaluation) there is no step to wait for and a fresh attempt redoes the phase from the last
  checkpoint, so the handler raises `ShutdownRequested` at once.
- The runner then puts the job back to ``queued`` under its own fencing token and enqueues it,
  so the next worker resumes it at once instead of after the lease expires.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

# The phases in which a SIGTERM only sets the flag: training waits for the step boundary (and a
# checkpoint); publishing is one short transaction that is better finished than redone.
DEFERRING_PHASES = frozenset({"training", "publishing"})


class ShutdownRequested(Exception):  # noqa: N818 - a request, like KeyboardInterrupt
    """The worker is stopping: release the job for another worker (never a job failure)."""


class GracefulShutdown:
    """SIGTERM handling for one job in the process's main thread.

    ``phase`` is read at signal time (the progress callback's current phase), so the handler
    knows whether a step boundary is coming.
    """

    def __init__(self, phase: Callable[[], object]) -> None:
        self._phase = phase
        self.requested = False
        # Set once the job's outcome is being written: from then on a SIGTERM only flags.
        self.finishing = False

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.requested:
            return  # a second SIGTERM changes nothing; SIGKILL is the way to force it
        self.requested = True
        if not self.finishing and self._phase() not in DEFERRING_PHASES:
            raise ShutdownRequested("worker shutting down")

    def check(self, phase: object) -> None:
        """Raise if a shutdown was requested and `phase` is not one that waits for it (called
        when a job moves to a new phase: a SIGTERM during saving takes effect here)."""
        if self.requested and not self.finishing and phase not in DEFERRING_PHASES:
            raise ShutdownRequested("worker shutting down")

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulShutdown]:
        """Handle SIGTERM while the block runs (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


def forward_to_pool_children(child_pids: list[int]) -> None:
    """SIGTERM each pool child (Celery's warm shutdown only waits for them)."""
    for pid in child_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
