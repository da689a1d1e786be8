"""Loopback load test for a running Keel: N concurrent clients for T seconds, then the figures.

Each client loops over the mix that broke Keel in issue 22 — list files, retrieve a file, upload
a small file — against one server on this machine, and the run prints, per client count:
requests, req/s, p50 / p99 latency, and the answers by status (timeouts and connection errors
by name). Bounded by design: loopback addresses only, at most 500 clients and 300 s per step.

    # against a running server (one tenant key, or several: --api-key may repeat)
    .venv/bin/python benchmarks/load_test.py --base-url http://127.0.0.1:8000 \\
        --api-key sk-keel-… --clients 20 80 200 --duration 60

    # start `keel serve` on the embedded default in a temp dir, one tenant per --tenants
    .venv/bin/python benchmarks/load_test.py --serve --tenants 4 --clients 20 80 200 --duration 60

    # the same on Postgres + Redis (an empty database: keel serve migrates it)
    .venv/bin/python benchmarks/load_test.py --serve --tenants 4 --clients 20 80 200 \\
        --serve-env KEEL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/keel_load \\
        --serve-env KEEL_BROKER_URL=redis://127.0.0.1:6379/11

Clients are spread round-robin over the keys. Per-tenant rate limits apply (429 is load being
shed as designed); with --serve, --rate-limits sets KEEL_RATE_LIMIT_READS/WRITES (e.g. `off` to
measure raw capacity). The LAST line of each step is exactly:
    clients=<n> seconds=<t> requests=<n> req_per_s=<x> p50_ms=<x> p99_ms=<x> errors=<n> 5xx=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

MAX_CLIENTS = 500
MAX_DURATION_S = 300.0
REQUEST_TIMEOUT_S = 30.0
UPLOAD = (
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ]
        }
    )
    + "\n"
).encode()


def require_loopback(base_url: str) -> None:
    """Refuse anything but this machine: the script is a load generator, not a scanner."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"load_test: {base_url} is not a loopback address (127.0.0.1, ::1, localhost)")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class StepResult:
    clients: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # "200", "429", "timeout", …

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if not k.startswith("2"))

    @property
    def server_errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("5"))

    def summary(self) -> str:
        ordered = sorted(self.latencies_s)
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (
            f"clients={self.clients} seconds={self.seconds:.1f} requests={self.requests} "
            f"req_per_s={rate:.1f} p50_ms={percentile(ordered, 50) * 1000:.0f} "
            f"p99_ms={percentile(ordered, 99) * 1000:.0f} errors={self.errors} "
            f"5xx={self.server_errors}"
        )


async def _client_loop(
    http: httpx.AsyncClient, key: str, file_id: str | None, deadline: float, result: StepResult
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    turn = 0
    while time.monotonic() < deadline:
        op = turn % 3
        turn += 1
        started = time.monotonic()
        try:
            if op == 0:
                response = await http.get("/v1/files", params={"limit": 5}, headers=headers)
            elif op == 1 and file_id is not None:
                response = await http.get(f"/v1/files/{file_id}", headers=headers)
            else:
                response = await http.post(
                    "/v1/files",
                    headers=headers,
                    data={"purpose": "fine-tune"},
                    files={"file": ("load.jsonl", UPLOAD)},
                )
            outcome = str(response.status_code)
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        result.latencies_s.append(time.monotonic() - started)
        result.outcomes[outcome] += 1


async def _seed_file(http: httpx.AsyncClient, key: str) -> str | None:
    response = await http.post(
        "/v1/files",
        headers={"Authorization": f"Bearer {key}"},
        data={"purpose": "fine-tune"},
        files={"file": ("seed.jsonl", UPLOAD)},
    )
    return str(response.json()["id"]) if response.status_code == 200 else None


async def run_step(base_url: str, keys: Sequence[str], clients: int, duration: float) -> StepResult:
    """``clients`` concurrent clients for ``duration`` seconds; keys assigned round-robin."""
    require_loopback(base_url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS}")
    if not 0 < duration <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as http:
        seeds = {key: await _seed_file(http, key) for key in keys}
        result = StepResult(clients=clients, seconds=duration)
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(
            *(
                _client_loop(
                    http, keys[i % len(keys)], seeds[keys[i % len(keys)]], deadline, result
                )
                for i in range(clients)
            )
        )
        # Requests in flight at the deadline finish (bounded by the request timeout) and count.
        result.seconds = time.monotonic() - started
    return result


def _create_tenant(env: dict[str, str], cwd: Path, name: str) -> str:
    keel = str(Path(sys.executable).with_name("keel"))
    out = subprocess.run(
        [keel, "admin", "create-tenant", name],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def _served(
    rate_limits: str | None, extra_env: dict[str, str]
) -> Iterator[tuple[str, dict[str, str], Path]]:
    # Imported here: the script also runs against a server started elsewhere.
    from cli.local_service import serve_locally

    with tempfile.TemporaryDirectory(prefix="keel-load-") as tmp:
        data = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env |= {
            "KEEL_ENV": "development",
            "KEEL_DATA_DIR": str(data),
            "KEEL_DATABASE_URL": f"sqlite:///{data}/keel.db",
            "KEEL_BROKER_URL": f"sqla+sqlite:///{data}/broker/broker.db",
        }
        if rate_limits is not None:
            env |= {"KEEL_RATE_LIMIT_READS": rate_limits, "KEEL_RATE_LIMIT_WRITES": rate_limits}
        env |= extra_env  # e.g. KEEL_DATABASE_URL / KEEL_BROKER_URL for Postgres + Redis
        repo = Path(__file__).resolve().parent.parent
        with serve_locally(env, Path(tmp) / "serve.log", cwd=repo) as service:
            yield service.base_url, env, repo


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", action="append", default=[], help="tenant key (repeatable)")
    parser.add_argument("--serve", action="store_true", help="start keel serve (embedded)")
    parser.add_argument("--tenants", type=int, default=1, help="with --serve: tenants to create")
    parser.add_argument("--rate-limits", help="with --serve: KEEL_RATE_LIMIT_READS and _WRITES")
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --serve: extra setting for keel serve, e.g. KEEL_DATABASE_URL=postgresql+…",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[20])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    args = parser.parse_args(argv)

    def run_all(base_url: str, keys: list[str]) -> None:
        for clients in args.clients:
            result = asyncio.run(run_step(base_url, keys, clients, args.duration))
            print(
                "  by status: " + ", ".join(f"{k}={v}" for k, v in sorted(result.outcomes.items()))
            )
            print(result.summary(), flush=True)

    if args.serve:
        extra = dict(item.split("=", 1) for item in args.serve_env)
        with _served(args.rate_limits, extra) as (base_url, env, repo):
            keys = [
                _create_tenant(env, repo, f"load-{os.getpid()}-{i}")
                for i in range(max(1, args.tenants))
            ]
            run_all(base_url, keys)
    else:
        if not args.api_key:
            parser.error("--api-key is required without --serve")
        run_all(args.base_url, args.api_key)


if __name__ == "__main__":
    main()
