"""Job-create latency for a big training file (issue 22: screening in the request took 5.9 s
for 100k lines, 19.6 s for 50 MB).

Runs the app in-process (FastAPI's TestClient, no HTTP server) on the embedded default (SQLite
and the SQLite broker in a temp dir) with screening on, uploads one synthetic chat file of
--rows benign rows, then times --creates job creates on it (the first one alone is the figure
that matters: before the screening cache, every create screened the file again). When the
checkout validates off the request path (worker.validation exists), it also times the
validation the validation worker does, once on a cold cache and once on a warm one.

    .venv/bin/python benchmarks/create_latency.py --rows 100000 --creates 3

Run it from another checkout's root (e.g. an exported older commit) to measure that version:
it imports the Keel packages of the current directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ADMIN_KEY = "bench-admin-" + "k" * 40
MODEL = "smollm2-135m-instruct"


def _rows(n: int) -> bytes:
    lines = []
    for i in range(n):
        row = {
            "messages": [
                {"role": "system", "content": "You are a patient math tutor."},
                {"role": "user", "content": f"What is {i} plus {i % 97}? Show the steps."},
                {"role": "assistant", "content": f"{i} + {i % 97} = {i + i % 97}."},
            ]
        }
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())

    tmp = Path(tempfile.mkdtemp(prefix="keel-create-latency-"))
    policy = tmp / "policy.yaml"
    policy.write_text(
        json.dumps(
            {
                "allowed_models": [MODEL],
                "screening": {"enabled": True, "max_flagged_fraction": 0.05},
                "quotas": {"max_active_jobs": None},
            }
        )
    )
    os.environ.update(
        {
            "KEEL_ENV": "testing",
            "KEEL_DATABASE_URL": f"sqlite:///{tmp}/keel.db",
            "KEEL_BROKER_URL": f"sqla+sqlite:///{tmp}/broker.db",
            "KEEL_DATA_DIR": str(tmp / "data"),
            "KEEL_ADMIN_KEY": ADMIN_KEY,
            "KEEL_POLICY_FILE": str(policy),
            "KEEL_RATE_LIMIT_READS": "off",
            "KEEL_RATE_LIMIT_WRITES": "off",
        }
    )
    (tmp / "data").mkdir()
    from alembic import command
    from alembic.config import Config
    from fastapi.testclient import TestClient

    from api.main import create_app

    config = Config(str(Path.cwd() / "alembic.ini"))
    config.set_main_option("script_location", str(Path.cwd() / "migrations"))
    command.upgrade(config, "head")

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    content = _rows(args.rows)
    with TestClient(create_app()) as client:
        tenant = client.post("/admin/v1/tenants", headers=admin, json={"name": "bench"}).json()
        key = client.post(f"/admin/v1/tenants/{tenant['id']}/api_keys", headers=admin).json()
        headers = {"Authorization": f"Bearer {key['key']}"}
        upload = client.post(
            "/v1/files",
            headers=headers,
            data={"purpose": "fine-tune"},
            files={"file": ("big.jsonl", content)},
        )
        assert upload.status_code == 200, upload.text
        file_id = upload.json()["id"]
        print(f"keel from {Path(sys.modules['api'].__file__ or '').parent.parent}")
        print(f"rows={args.rows} bytes={len(content)}")
        timings, job_ids = [], []
        for _ in range(args.creates):
            started = time.perf_counter()
            created = client.post(
                "/v1/fine_tuning/jobs",
                headers=headers,
                json={"model": MODEL, "training_file": file_id},
            )
            timings.append(time.perf_counter() - started)
            assert created.status_code == 200, created.text
            job_ids.append(created.json()["id"])
            print(f"create {created.json()['status']:<17} {timings[-1] * 1000:9.1f} ms")
        print(
            f"create_ms first={timings[0] * 1000:.1f} "
            f"median={statistics.median(timings) * 1000:.1f}"
        )
        try:
            from worker.validation import validate_job
        except ImportError:
            return  # a checkout from before validation moved off the request path
        for label, job_id in zip(("cold", "warm"), job_ids, strict=False):
            started = time.perf_counter()
            status = validate_job(job_id)
            print(
                f"validation ({label} screening cache) -> {status} "
                f"{(time.perf_counter() - started) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    main()
