"""benchmarks/load_test.py: a tiny real run (5 clients × 3 s) against the API served by uvicorn
on loopback (test Postgres, test Redis for the rate limits), plus its pure helpers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from api.main import create_app
from benchmarks.load_test import StepResult, percentile, require_loopback, run_step
from cli.local_service import free_port
from db.settings import get_settings
from tests.api.conftest import Customer


@pytest.fixture
def served_api(
    engine: Engine, enqueued: list[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    # A low write limit, so the run meets 429s and the by-status count has more than one key.
    monkeypatch.setattr(get_settings(), "rate_limit_writes", "5/minute")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_tiny_run_counts_requests_latencies_and_statuses(
    served_api: str, alice: Customer, bob: Customer
) -> None:
    result = asyncio.run(run_step(served_api, [alice.key, bob.key], clients=5, duration=3.0))
    assert result.requests > 15  # a few requests a second even on a contended machine
    assert len(result.latencies_s) == result.requests
    assert result.seconds >= 3.0
    assert result.outcomes["200"] > 0
    # Each tenant has 5 writes a minute, one used by the seed upload: the rest are 429s.
    assert result.outcomes["429"] > 0
    assert set(result.outcomes) <= {"200", "429"}, result.outcomes
    assert result.server_errors == 0
    assert result.errors == result.outcomes["429"]
    line = result.summary()
    assert line.startswith("clients=5 seconds=")
    assert f"requests={result.requests} " in line
    assert "5xx=0" in line


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000", "http://127.0.0.2"]
)
def test_loopback_is_allowed(url: str) -> None:
    require_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0"])
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(SystemExit, match="not a loopback address"):
        require_loopback(url)


def test_bounds_are_enforced() -> None:
    with pytest.raises(ValueError, match="clients"):
        asyncio.run(run_step("http://127.0.0.1:1", ["k"], clients=501, duration=1))
    with pytest.raises(ValueError, match="duration"):
        asyncio.run(run_step("http://127.0.0.1:1", ["k"], clients=1, duration=301))


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_summary_counts_errors_by_kind() -> None:
    result = StepResult(clients=2, seconds=2.0, latencies_s=[0.1, 0.2, 0.3, 0.4])
    result.outcomes.update({"200": 1, "429": 1, "503": 1, "timeout": 1})
    assert result.requests == 4
    assert result.errors == 3
    assert result.server_errors == 1
    assert result.summary() == (
        "clients=2 seconds=2.0 requests=4 req_per_s=2.0 p50_ms=200 p99_ms=400 errors=3 5xx=1"
    )
