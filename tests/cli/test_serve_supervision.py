"""The real `keel serve` (embedded SQLite default, all four children): the reaper, the worker
and the webhooks worker, SIGKILLed, come back; the API keeps answering throughout."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from cli.local_service import serve_locally


def _children(ppid: int) -> dict[int, str]:
    """pid -> command line of the direct children of ``ppid`` (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, hence rsplit.
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            found[int(entry.name)] = cmdline
    return found


def _child_pid(ppid: int, marker: str) -> int | None:
    return next((pid for pid, cmd in _children(ppid).items() if marker in cmd), None)


def _wait_new_child(ppid: int, marker: str, old_pid: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _child_pid(ppid, marker)
        if pid is not None and pid != old_pid:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"{marker} was not restarted within {timeout:.0f} s")


def test_keel_serve_restarts_a_killed_reaper_and_worker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        "KEEL_ENV": "development",
        "KEEL_DATA_DIR": str(data),
        "KEEL_DATABASE_URL": f"sqlite:///{data}/keel.db",
        "KEEL_BROKER_URL": f"sqla+sqlite:///{data}/broker/broker.db",
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    with serve_locally(env, log, ready_timeout=120, stop_timeout=30) as service:
        serve_pid = service.process.pid
        # The file validator runs beside the training worker, on its own queue.
        deadline = time.monotonic() + 30
        while _child_pid(serve_pid, "-Q validation") is None:
            assert time.monotonic() < deadline, "no validator child"
            time.sleep(0.2)
        # The training and webhooks workers are Celery too: told apart by their queue.
        for marker in ("worker.reaper", "-Q gpu", "-Q webhooks"):
            deadline = time.monotonic() + 30
            while (old := _child_pid(serve_pid, marker)) is None:
                assert time.monotonic() < deadline, f"no {marker} child"
                time.sleep(0.2)
            os.kill(old, signal.SIGKILL)
            new = _wait_new_child(serve_pid, marker, old)
            assert new != old
            assert httpx.get(f"{service.base_url}/healthz", timeout=5).status_code == 200
        assert service.process.poll() is None  # keel serve itself never stopped
    text = log.read_text()
    assert "reaper killed by SIGKILL" in text
    assert "restarting reaper" in text
    assert "worker killed by SIGKILL" in text
    assert "restarting worker" in text
    assert "webhooks killed by SIGKILL" in text
    assert "restarting webhooks" in text
