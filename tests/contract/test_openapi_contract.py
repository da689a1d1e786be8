"""The OpenAPI document against the live server: Schemathesis, every check, 0 failures.

`st run` (the pinned Schemathesis CLI, all four phases: examples, coverage, fuzzing, stateful)
exercises every operation of /openapi.json with generated requests, positive and negative,
deterministic and bounded per operation, through a real uvicorn process on a fresh Postgres
database (tests/contract/conftest.py). Credentials come from each operation's security scheme —
the tenant key on /v1, the admin key on /admin, the metrics token on /metrics — and the
`ignored_auth` check sends requests again without them. `--checks all`: no check is disabled.
A failure is a bug in the API or in its document (api/openapi.py), never one to suppress.

Where a 400 is right although a request matches the schema, the reason is state that JSON
Schema cannot express; those operations are listed in POSITIVE_ALSO_400, with the reason, and
only there does `positive_data_acceptance` accept a 400.

(The CLI rather than `schemathesis.pytest.from_fixture`: that loader fails on pytest 9, and the
CLI runs the coverage and stateful phases too.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.contract.conftest import LiveApi
from tests.fixtures.db import TEST_MODEL

ROOT = Path(__file__).resolve().parents[2]
ST = str(Path(sys.executable).with_name("st"))
# Per operation, beyond the default expected statuses of positive_data_acceptance:
POSITIVE_ALSO_400 = {
    # The provider policy of the moment (an admin changes it at run time) decides the allowed
    # models, the safety choices and the training limits; the files must exist and be valid.
    ("POST", "/v1/fine_tuning/jobs"): "provider policy and file state",
    # Cross-field rules of the policy document (min <= default <= max ratio, and so on).
    ("PUT", "/admin/v1/policy"): "cross-field policy rules",
    # `after` must name an object of this list (400 `invalid_cursor` otherwise).
    ("GET", "/v1/files"): "cursor must exist",
    ("GET", "/v1/fine_tuning/jobs"): "cursor must exist",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): "cursor must exist",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "cursor must exist",
    ("GET", "/admin/v1/tenants"): "cursor must exist",
    ("GET", "/admin/v1/audit_events"): "cursor must exist",
}
DEFAULT_POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
# Generated requests per operation in the fuzzing phase (the coverage phase adds its own
# deterministic cases): bounded so the module takes well under 4 minutes on 2 busy cores.
MAX_EXAMPLES = 15
SEED = 22
STATEFUL_MAX_STEPS = 6


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(api: LiveApi) -> str:
    lines = [
        "request-timeout = 30",
        # Bounded stateful scenarios (call chains such as upload -> create job -> cancel).
        "[phases.stateful]",
        f"max-steps = {STATEFUL_MAX_STEPS}",
        "[auth.openapi.ApiKey]",
        f"bearer = {_toml_string(api.tenant_key)}",
        "[auth.openapi.AdminKey]",
        f"bearer = {_toml_string(api.admin_key)}",
        "[auth.openapi.MetricsToken]",
        f"bearer = {_toml_string(api.metrics_token)}",
    ]
    # Real ids, drawn half of the time for these path parameters (generated ones otherwise).
    dictionaries = {
        "files": [api.file_id],
        "jobs": [api.job_id],
        "models": [TEST_MODEL],
        "tenants": [api.other_tenant_id],
        "keys": [api.other_key_id],
    }
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = [{', '.join(map(_toml_string, values))}]"]
    lines.append("[parameters]")
    for parameter, name in (
        ("path.file_id", "files"),
        ("path.job_id", "jobs"),
        ("path.model_id", "models"),
        ("path.tenant_id", "tenants"),
        ("path.key_id", "keys"),
    ):
        lines.append(f'"{parameter}" = {{ dictionary = "{name}", probability = 0.5 }}')
    statuses = ", ".join(_toml_string(s) for s in [*DEFAULT_POSITIVE, "400"])
    for method, path in sorted(POSITIVE_ALSO_400):
        lines += [
            "[[operations]]",
            f"include-method = {_toml_string(method)}",
            f"include-path = {_toml_string(path)}",
            f"checks.positive_data_acceptance.expected-statuses = [{statuses}]",
        ]
    return "\n".join(lines) + "\n"


def test_api_matches_its_openapi_document(live_api: LiveApi, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml(live_api))
    argv = [
        *[ST, "--config-file", str(config), "--no-color", "run"],
        f"{live_api.base_url}/openapi.json",
        *["--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)],
        *["--generation-deterministic", "--workers", "1"],
        *["--report-dir", str(tmp_path / "report")],
    ]
    # Run from the test's temp dir: Schemathesis and Hypothesis keep caches in the working
    # directory (.schemathesis/, .hypothesis/), which must not land in the checkout.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.hooks", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(output[-3000:])
    print(f"schemathesis run: {elapsed:.1f} s")
    assert result.returncode == 0, f"{output[-20000:]}\n--- API log ---\n{live_api.log()}"
    # The run covered the whole document, and found nothing.
    assert "No issues found" in output or " passed" in output, output[-3000:]
