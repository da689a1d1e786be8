"""cli.supervisor on small real child processes: a SIGKILLed child comes back, repeated rapid
failures give up with a clear message, backoff doubles to its cap, a stable child is forgiven."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest

from cli.supervisor import ChildSpec, Supervisor, backoff_delay, describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _start(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    return thread, result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkilled_child_is_restarted_and_the_others_are_untouched() -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("worker", SLEEPER), ChildSpec("reaper", SLEEPER)],
        log=lines.append,
        backoff_base=0.1,
        poll_interval=0.02,
        stop_timeout=5,
    )
    thread, result = _start(supervisor)
    try:
        worker, reaper = supervisor.child("worker"), supervisor.child("reaper")
        _wait_for(lambda: reaper.process is not None and worker.process is not None)
        assert reaper.process is not None
        assert worker.process is not None
        first_reaper, first_worker = reaper.process.pid, worker.process.pid
        os.kill(first_reaper, signal.SIGKILL)
        _wait_for(lambda: reaper.starts == 2)
        assert reaper.process.pid != first_reaper
        assert reaper.process.poll() is None  # the new reaper runs
        assert _alive(reaper.process.pid)
        assert worker.starts == 1
        assert worker.process.pid == first_worker
        assert any(line.startswith("reaper killed by SIGKILL after") for line in lines), lines
        assert any("restarting reaper" in line for line in lines)
        # The same for the worker, a second time: it comes back too.
        os.kill(first_worker, signal.SIGKILL)
        _wait_for(lambda: worker.starts == 2)
        assert worker.process.poll() is None
    finally:
        supervisor.stop()
        thread.join(timeout=15)
    assert result == [0]
    for child in supervisor.children:
        assert child.process is not None
        assert child.process.returncode == -signal.SIGTERM  # stopped, not left behind


def test_rapid_failures_back_off_then_give_up_with_a_clear_message() -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        [
            ChildSpec("api", [sys.executable, "-c", "import sys; sys.exit(3)"]),
            ChildSpec("reaper", SLEEPER),
        ],
        log=lines.append,
        backoff_base=0.05,
        backoff_cap=0.15,
        max_rapid_failures=4,
        poll_interval=0.02,
        stop_timeout=5,
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 20
    api = supervisor.child("api")
    assert api.starts == 4
    assert api.history == [0.05, 0.1, 0.15]  # doubled, then capped
    assert "api exit code 3 after" in lines[-1]
    assert "giving up: it failed 4 times in a row" in lines[-1]
    reaper = supervisor.child("reaper").process
    assert reaper is not None
    assert reaper.returncode == -signal.SIGTERM  # giving up stops the whole service


def test_a_child_that_stayed_up_is_forgiven() -> None:
    # Each run lasts longer than stable_after, so every failure is the first of a series: the
    # backoff stays at its base and the supervisor never gives up.
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("worker", [sys.executable, "-c", "import time; time.sleep(0.3); exit(1)"])],
        log=lines.append,
        backoff_base=0.05,
        max_rapid_failures=2,
        stable_after=0.2,
        poll_interval=0.02,
        stop_timeout=5,
    )
    thread, result = _start(supervisor)
    try:
        _wait_for(lambda: supervisor.child("worker").starts >= 4, timeout=30)
    finally:
        supervisor.stop()
        thread.join(timeout=15)
    assert result == [0]
    worker = supervisor.child("worker")
    assert set(worker.history) == {0.05}
    assert not any("giving up:" in line for line in lines)


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (20, 30)]
)
def test_backoff_doubles_to_its_cap(failures: int, delay: float) -> None:
    assert backoff_delay(failures, 1.0, 30.0) == delay


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
