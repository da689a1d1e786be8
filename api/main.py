"""The Keel HTTP API: `uvicorn api.main:create_app --factory`."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import Depends, FastAPI

from api.admin.router import router as admin_router
from api.body_limit import BodyLimitMiddleware
from api.console import install_console
from api.errors import register_error_handlers
from api.files.router import router as files_router
from api.health import router as health_router
from api.input_guard import check_path_and_query
from api.jobs.router import router as jobs_router
from api.jobs.stream_slots import stream_slots_for
from api.metrics import install_metrics
from api.models.router import router as models_router
from api.openapi import install_openapi
from api.quotas.router import router as usage_router
from api.rate_limit import TenantRateLimiter, storage_url
from api.webhooks.router import router as webhooks_router
from db.admin_key import resolve_admin_key_hash
from db.repositories.policy import load_policy_file
from db.settings import get_settings


def _announce_generated_admin_key(key: str, hash_file: Path) -> None:
    # Printed once, to the operator's terminal; never logged, never stored in plaintext.
    sys.stderr.write(
        "\nKeel generated an admin key for this development install (shown once; only its "
        f"hash is kept in {hash_file}; delete that file and restart for a new key):\n\n"
        f"    {key}\n\n"
    )
    sys.stderr.flush()


def create_app() -> FastAPI:
    settings = get_settings()  # fails fast on weak or published secrets
    # A broken policy file fails start-up naming the field, not the first job or admin GET.
    load_policy_file(settings.resolved_policy_file)
    app = FastAPI(
        title="Keel",
        summary="Safe fine-tuning as a service (OpenAI-compatible fine-tuning API).",
        version="0.1.0",
        # Ahead of every route's own dependencies: no control byte in an id or a query reaches SQL.
        dependencies=[Depends(check_path_and_query)],
    )
    app.state.settings = settings
    app.state.admin_key_hash = resolve_admin_key_hash(settings, _announce_generated_admin_key)
    app.state.rate_limiter = TenantRateLimiter.from_settings(settings)
    app.state.stream_slots = stream_slots_for(
        storage_url(settings), settings.sse_max_streams_per_tenant, settings.sse_poll_seconds
    )
    register_error_handlers(app)
    install_metrics(app)
    # Added last, so outermost: the cap applies before any other middleware touches the body.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_json_body_bytes,
        admin_key_hash=app.state.admin_key_hash,
    )
    for router in (
        health_router,
        files_router,
        jobs_router,
        models_router,
        usage_router,
        webhooks_router,
        admin_router,
    ):
        app.include_router(router)
    install_openapi(app)
    install_console(app)
    return app
