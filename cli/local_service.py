"""Run Keel on this machine as child processes: the one "start `keel serve` and wait" helper.

Used by scripts/demo.py, scripts/experiment.py (`serve_locally`) and the e2e tests (`spawn`,
`stop`, `wait_ready` for the API, worker, validator and reaper they start one by one so that a
test can kill the worker). `keel serve` itself starts its children from the same `*_argv` lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    base_url: str, server: subprocess.Popen[bytes] | None = None, timeout: float = 180
) -> None:
    """Poll GET /readyz until 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"keel serve exited early with code {server.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base_url} did not become ready within {timeout:.0f} s")


def api_argv(host: str, port: int, *, log_level: str | None = None) -> list[str]:
    """The API process (uvicorn on the app factory), as `keel serve` and the e2e tests run it."""
    argv = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory"]
    argv += ["--host", host, "--port", str(port)]
    return argv + (["--log-level", log_level] if log_level else [])


def worker_argv(concurrency: int, node_name: str) -> list[str]:
    """A Celery worker on the GPU queue (prefork: the task runs on a child's main thread, where
    the evaluation deadline's SIGALRM works)."""
    return [
        *[sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"],
        *["-Q", "gpu", "-c", str(concurrency), "--pool", "prefork", "--loglevel", "INFO"],
        *["-n", node_name],
    ]


def webhook_worker_argv(concurrency: int, node_name: str) -> list[str]:
    """A Celery worker on the webhooks queue only: threads (the task waits on the network), so
    a slow or dead receiver ties up one of these threads, never a training worker."""
    return [
        *[sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"],
        *["-Q", "webhooks", "-c", str(concurrency), "--pool", "threads", "--loglevel", "INFO"],
        *["-n", node_name],
    ]


def validator_argv(node_name: str) -> list[str]:
    """A Celery worker on the validation queue (job file validation, screening): its own process,
    so a job's files are checked at once even while the GPU worker trains for hours. Two
    processes, each kept for many tasks (the screening index is built once per process, ~2.5 s;
    training's one-task-per-child rule is for GPU memory)."""
    return [
        *[sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"],
        *["-Q", "validation", "-c", "2", "--pool", "prefork", "--loglevel", "INFO"],
        *["--max-tasks-per-child", "200", "-n", node_name],
    ]


def reaper_argv() -> list[str]:
    return [sys.executable, "-m", "worker.reaper"]


def keel_executable() -> str:
    """The `keel` console script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("keel"))


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so `stop` reaches its children), output appended
    to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )


def stop(*processes: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM each process group, then SIGKILL those not exited within ``timeout`` seconds
    (all are signalled first, so they shut down side by side)."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass(frozen=True)
class LocalService:
    base_url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None

    def create_tenant(self, name: str) -> str:
        """A new tenant and API key (`keel admin create-tenant`, same state); returns the key."""
        created = subprocess.run(
            [keel_executable(), "admin", "create-tenant", name],
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        return created.stdout.strip().splitlines()[-1]


@contextmanager
def serve_locally(
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    ready_timeout: float = 180,
    stop_timeout: float = 30,
) -> Iterator[LocalService]:
    """`keel serve` on a free port, ready (GET /readyz answers 200) when this yields; stopped
    (its whole process group) when the block ends, however it ends."""
    port = free_port()
    process = spawn([keel_executable(), "serve", "--port", str(port)], log_path, env, cwd)
    service = LocalService(f"http://127.0.0.1:{port}", process, dict(env), log_path, cwd)
    try:
        wait_ready(service.base_url, process, timeout=ready_timeout)
        yield service
    finally:
        stop(process, timeout=stop_timeout)
