"""/metrics (Prometheus): request counts and latency per route template, jobs by status.

Guarded by its own bearer token (KEEL_METRICS_TOKEN), separate from tenant and admin keys so a
scraper holds no power over the API. Unset: open outside production (a local install), and 403
``metrics_token_required`` in production — the chosen fail-closed default, rather than a second
listener bound to an internal port, because one port is what `keel serve` and the compose file
expose and a scraper can send a header.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from api.dependencies import bearer_token
from api.errors import Forbidden, Unauthorized
from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.session import session_scope
from db.settings import Environment, KeelSettings


class ApiMetrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keel_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "keel_jobs", "Fine-tuning jobs by status", ["status"], registry=self.registry
        )


def _route_template(request: Request) -> str:
    # Routing stores the matched route in the (shared) scope; templates keep cardinality low.
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def require_metrics_token(request: Request) -> None:
    settings: KeelSettings = request.app.state.settings
    expected = settings.metrics_token
    if not expected:
        if settings.env == Environment.PRODUCTION:
            raise Forbidden(
                "/metrics is disabled: set KEEL_METRICS_TOKEN to scrape it.",
                code="metrics_token_required",
            )
        return
    token = bearer_token(request.headers.get("authorization"))
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("Invalid or missing metrics token.", code="invalid_metrics_token")


def install_metrics(app: FastAPI) -> None:
    metrics = ApiMetrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_template(request)
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
            metrics.requests.labels(request.method, route, str(status)).inc()

    router = APIRouter(tags=["health"])

    def _job_counts() -> dict[str, int]:
        with session_scope() as session:
            return JobRepository(session).count_by_status()

    @router.get("/metrics", dependencies=[Depends(require_metrics_token)])
    async def metrics_endpoint() -> Response:
        """Prometheus metrics."""
        counts = await run_in_threadpool(_job_counts)
        for status in JobStatus:
            metrics.jobs.labels(status.value).set(counts.get(status.value, 0))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
