"""A live Keel (tests/e2e/service.py) on the suite's own Postgres and Redis, one tenant, and a
table of each scenario's recovery time printed at the end of the run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.service import E2E_POLICY, MODEL_CACHE, TEST_MODEL, LiveService
from tests.faults.backends import OwnPostgres, OwnRedis, available

# Tiny evaluation: the suite proves recovery, not safety (the gate tests do that).
# Plain LoRA (the job asks for method "none", which this policy allows) and no look-alike rows:
# about half the CPU time of a SAP step; resuming SAP's own state is tests/e2e/test_worker_crash.
FAULT_POLICY = {
    **E2E_POLICY,
    "customer_may_change": {"method": True, "sap_knobs": False, "mixer_ratio": True},
    "mixer": {**E2E_POLICY["mixer"], "contrast_ratio": 0.0},  # type: ignore[dict-item]
    "evaluation": {
        **E2E_POLICY["evaluation"],  # type: ignore[dict-item]
        "num_harmful": 2,
        "num_benign": 1,
        "max_new_tokens": 4,
    },
    "training": {**E2E_POLICY["training"], "max_length": 128},  # type: ignore[dict-item]
}
# Short lease and reaper interval: a dead worker's job is retaken within seconds, not minutes.
LEASE_SECONDS = 10  # 5 s was lost by a live worker starved of CPU on a busy machine
RESULTS: list[dict[str, object]] = []


@pytest.fixture(scope="session")
def fault_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultService]:
    missing = available()
    if missing:
        pytest.skip(missing)
    assert (MODEL_CACHE / TEST_MODEL / "keel-model.json").exists(), f"{TEST_MODEL} not cached"
    root = tmp_path_factory.mktemp("keel-faults")
    broker = OwnRedis(root / "redis").start()
    database = OwnPostgres(Path(f"/tmp/keel-faults-pg-{os.getpid()}")).init()
    service = LiveService(
        root / "service",
        policy=FAULT_POLICY,
        lease_seconds=LEASE_SECONDS,
        pg_port=database.port,
        redis_port=broker.port,
        redis_db=0,
        extra_env={
            "KEEL_REAPER_INTERVAL_SECONDS": "1",
            "KEEL_CHECKPOINT_EVERY_SECONDS": "60",
            # One math thread per process: on a busy machine two threads that wait on each
            # other at every op cost far more than they gain (a 135M-model step took 89 s).
            "OMP_NUM_THREADS": "1",
        },
    )
    try:
        service.start()
        key = service.create_tenant("fault-customer")
        client = httpx.Client(
            base_url=service.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        yield FaultService(service, broker, database, client, root)
    finally:
        try:
            service.stop()
        finally:
            broker.kill()
            database.destroy()


class FaultService:
    def __init__(
        self,
        live: LiveService,
        broker: OwnRedis,
        database: OwnPostgres,
        client: httpx.Client,
        root: Path,
    ) -> None:
        self.live, self.broker, self.database, self.client, self.root = (
            live,
            broker,
            database,
            client,
            root,
        )
        self.fault_log = root / "faults.jsonl"

    def fresh_worker(self, fault_point: str | None = None) -> None:
        """Replace the worker (idle: SIGKILL is harmless) by one armed at ``fault_point``."""
        for name in [n for n in self.live.procs if n.startswith("worker")]:
            self.live.kill(name)
        env = {"KEEL_FAULT_LOG": str(self.fault_log)}
        if fault_point:
            env["KEEL_FAULT_POINT"] = fault_point
        self.live.start_worker("worker", env=env)


def record(result: dict[str, object]) -> None:
    RESULTS.append(result)
    report = os.environ.get("KEEL_FAULT_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(json.dumps(result) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault scenarios: recovery")
    for row in RESULTS:
        terminalreporter.write_line(
            "  ".join(f"{key}={value}" for key, value in row.items()), flush=True
        )
