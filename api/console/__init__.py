"""The web console under /console: server-rendered pages for customers and the provider.

It is another face of the same API: the same services and repositories as the JSON routers, the
same tenant scoping, the same request transaction (api.dependencies.SessionDep). Sign-in
exchanges a key for a signed session cookie (api.console.session); forms carry a CSRF token.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.console.auth import router as auth_router
from api.console.customer import router as customer_router
from api.console.provider import router as provider_router
from api.console.views import register_page_errors


def install_console(app: FastAPI) -> None:
    register_page_errors(app)
    for router in (auth_router, customer_router, provider_router):
        app.include_router(router)
