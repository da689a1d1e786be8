"""Keep `keel serve`'s children (API, worker, reaper) running: restart a dead one with backoff.

Before this, `keel serve` stopped for good when any child died (issue 22). Now a child that
exits while the service is not stopping is logged with why (exit code, or the signal that killed
it) and started again after a backoff that doubles on each rapid failure (base, 2×base, … capped
at ``backoff_cap``). A child that stayed up for ``stable_after`` seconds counts as healthy again,
so one crash a day never accumulates towards giving up. ``max_rapid_failures`` failures in a row,
each within ``stable_after`` of its start, mean the child cannot run (bad config, port taken,
broken install): the supervisor stops everything and returns non-zero with a message naming the
child, rather than restarting it forever.

Pure process management, no Keel imports: testable on any small real child process.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 30.0
DEFAULT_MAX_RAPID_FAILURES = 5
DEFAULT_STABLE_AFTER_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    rapid_failures: int = 0
    restart_at: float | None = None  # when a dead child is due to start again
    starts: int = 0
    history: list[float] = field(default_factory=list)  # backoffs chosen, for the log and tests


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL' (Popen reports a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """base × 2^(failures-1), capped: 1, 2, 4, 8, 16, 30, 30 … seconds with the defaults."""
    return min(cap, base * (2 ** max(0, failures - 1)))


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        log: Callable[[str], None],
        popen: Callable[[ChildSpec], subprocess.Popen[bytes]] | None = None,
        backoff_base: float = DEFAULT_BACKOFF_BASE_S,
        backoff_cap: float = DEFAULT_BACKOFF_CAP_S,
        max_rapid_failures: int = DEFAULT_MAX_RAPID_FAILURES,
        stable_after: float = DEFAULT_STABLE_AFTER_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        poll_interval: float = 0.5,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        self._log = log
        self._popen = popen or (lambda spec: subprocess.Popen(list(spec.argv)))
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_rapid_failures = max_rapid_failures
        self._stable_after = stable_after
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        # A plain flag, not a threading.Event: stop() runs in a signal handler, and Event.set()
        # there can deadlock on the lock the interrupted Event.wait() holds.
        self._stopping = False

    def stop(self) -> None:
        """Ask run() to stop every child and return (safe from a signal handler)."""
        self._stopping = True

    def child(self, name: str) -> _Child:
        return next(c for c in self.children if c.spec.name == name)

    def _start(self, child: _Child) -> None:
        child.process = self._popen(child.spec)
        child.started_at = time.monotonic()
        child.restart_at = None
        child.starts += 1

    def run(self) -> int:
        """Start every child and supervise until stop() (0) or a child gives up (1)."""
        for child in self.children:
            self._start(child)
        code = 0
        try:
            while not self._stopping:
                if not self._tick():
                    code = 1
                    break
                time.sleep(self._poll_interval)
        finally:
            self._stop_all()
        return code

    def _tick(self) -> bool:
        """One pass: note deaths, start those whose backoff has passed. False: give up."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._log(f"restarting {child.spec.name} (start {child.starts + 1})")
                    self._start(child)
                continue
            assert child.process is not None
            returncode = child.process.poll()
            if returncode is None:
                continue
            ran_for = now - child.started_at
            if ran_for >= self._stable_after:
                child.rapid_failures = 0  # it had been healthy: this is a fresh failure
            child.rapid_failures += 1
            why = describe_exit(returncode)
            if child.rapid_failures >= self._max_rapid_failures:
                self._log(
                    f"{child.spec.name} {why} after {ran_for:.1f} s; giving up: it failed "
                    f"{child.rapid_failures} times in a row, each within "
                    f"{self._stable_after:.0f} s of starting (see its output above); stopping "
                    "Keel"
                )
                return False
            delay = backoff_delay(child.rapid_failures, self._backoff_base, self._backoff_cap)
            child.history.append(delay)
            child.restart_at = now + delay
            self._log(
                f"{child.spec.name} {why} after {ran_for:.1f} s; restarting in {delay:.1f} s "
                f"(failure {child.rapid_failures} of {self._max_rapid_failures} before giving up)"
            )
        return True

    def _stop_all(self) -> None:
        # SIGTERM everyone first, so they shut down side by side, then wait, then SIGKILL.
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
