"""The Keel HTTP API: `uvicorn api.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from api.admin.router import router as admin_router
from api.errors import register_error_handlers
from api.files.router import router as files_router
from api.health import router as health_router
from api.jobs.router import router as jobs_router
from api.metrics import install_metrics
from api.models.router import router as models_router
from api.quotas.router import router as usage_router
from db.repositories.policy import load_policy_file
from db.settings import get_settings


def create_app() -> FastAPI:
    settings = get_settings()  # fails fast on placeholder secrets outside development
    # A broken policy file fails start-up naming the field, not the first job or admin GET.
    load_policy_file(settings.resolved_policy_file)
    app = FastAPI(
        title="Keel",
        summary="Safe fine-tuning as a service (OpenAI-compatible fine-tuning API).",
        version="0.1.0",
    )
    app.state.settings = settings
    register_error_handlers(app)
    install_metrics(app)
    for router in (
        health_router,
        files_router,
        jobs_router,
        models_router,
        usage_router,
        admin_router,
    ):
        app.include_router(router)
    return app
