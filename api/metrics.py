"""/metrics (Prometheus): request counts and latency per route template, jobs by status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.session import session_scope


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

    @router.get("/metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus metrics."""
        counts = await run_in_threadpool(_job_counts)
        for status in JobStatus:
            metrics.jobs.labels(status.value).set(counts.get(status.value, 0))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
