"""cli.local_service: the child-process helpers that demo, experiment and the e2e tests share."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from cli.local_service import spawn, stop, validator_argv, wait_ready, worker_argv


def test_spawn_logs_and_stop_terminates_the_group(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    child = spawn(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        log,
        {"PATH": "/usr/bin:/bin"},
    )
    sleeper = spawn([sys.executable, "-c", "import time; time.sleep(60)"], log, {})
    stop(child, sleeper, timeout=10)
    assert child.returncode == -signal.SIGTERM
    assert sleeper.returncode == -signal.SIGTERM


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = spawn(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        tmp_path / "stubborn.log",
        {},
    )
    # Only once the handler is installed does SIGTERM meet an ignoring process.
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop(stubborn, timeout=0.5)
    assert stubborn.returncode == -signal.SIGKILL


def test_wait_ready_fails_early_when_the_server_exits(tmp_path: Path) -> None:
    dead = spawn([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "dead.log", {})
    dead.wait(timeout=10)
    with pytest.raises(RuntimeError, match="exited early with code 3"):
        wait_ready("http://127.0.0.1:9", dead, timeout=5)


def test_training_and_validation_run_in_separate_workers_on_separate_queues() -> None:
    worker, validator = worker_argv(1, "w@h"), validator_argv("v@h")
    assert worker[worker.index("-Q") + 1] == "gpu"
    # Only `validation`: a validator never takes a training job, so it is never busy for hours.
    assert validator[validator.index("-Q") + 1] == "validation"
    assert validator[validator.index("-n") + 1] == "v@h"
