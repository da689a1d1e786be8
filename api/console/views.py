"""Templates and the console's own page-shaped errors (sign-in redirect, 404 page, CSRF 403).

A console page never answers with the JSON error body: a missing job, another tenant's job and a
rejected form are HTML pages, so a person sees the same thing a missing page shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from api.console.session import SESSION_COOKIE

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PREFIX = "/console"


def _when(value: datetime | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = _when


class SignInRequired(Exception):
    """No live session of the kind the page needs: back to the sign-in page."""


class PageNotFound(Exception):
    """Answered as the console's 404 page (a missing id and another tenant's id alike)."""


class CsrfRejected(Exception):
    """A form posted without this session's CSRF token."""


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    # Pages show tenant data: never cached by a shared cache, never framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _sign_in_required(request: Request, _: Exception) -> Response:
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def _not_found(request: Request, _: Exception) -> Response:
    return render(request, "not_found.html", {"user": None}, status_code=404)


def _csrf_rejected(request: Request, _: Exception) -> Response:
    return render(request, "forbidden.html", {"user": None}, status_code=403)


def register_page_errors(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(PageNotFound, _not_found)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
