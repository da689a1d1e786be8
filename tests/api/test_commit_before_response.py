"""Read-your-writes: a request's transaction is committed before its response starts.

With FastAPI's default dependency scope the session's commit ran *after* the response was sent,
so a client that created a tenant and immediately asked for its API key could get a 404 (seen in
the live-service suite). This checks the order at the ASGI level: when the response starts, a
separate connection must already see the new row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from api.main import create_app
from db.models.tenant import Tenant


def test_created_tenant_is_visible_to_another_connection_when_the_response_starts(
    engine: Engine, data_dir: Path, admin_headers: dict[str, str], enqueued: list[str]
) -> None:
    app = create_app()
    name = "read-your-writes-tenant"
    visible_at_response_start: list[int] = []

    async def observed_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def observing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and scope.get("method") == "POST":
                with Session(engine) as other:
                    count = other.scalar(
                        select(func.count()).select_from(Tenant).where(Tenant.name == name)
                    )
                visible_at_response_start.append(int(count or 0))
            await send(message)

        await app(scope, receive, observing_send)

    with TestClient(observed_app) as client:
        response = client.post("/admin/v1/tenants", json={"name": name}, headers=admin_headers)
    assert response.is_success, response.text
    assert visible_at_response_start == [1]
