"""Console sign-in and sign-out, the signed-in user of a request, and the CSRF check of forms.

Sign-in takes an API key (a customer) or an admin key (the provider) from a POSTed form and sets
the session cookie (api.console.session): HttpOnly, SameSite=Strict, Secure in production, path
/console. The key is checked exactly as the JSON API checks a bearer key (same repositories, same
constant-time admin comparison), and then never leaves this request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.console.session import (
    BOOTSTRAP_KEY_ID,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGN_IN_CSRF_COOKIE,
    Kind,
    SessionSigner,
    csrf_matches,
    new_csrf_token,
)
from api.console.views import PREFIX, CsrfRejected, SignInRequired, render
from api.dependencies import BOOTSTRAP_ADMIN, admin_token_ok
from db.repositories.admin import AdminKeyRepository
from db.repositories.tenants import ApiKeyRepository
from db.session import session_scope
from db.settings import Environment, KeelSettings

router = APIRouter(prefix=PREFIX, include_in_schema=False)
MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class ConsoleUser:
    kind: Kind
    csrf: str
    tenant_id: str = ""
    admin: str = ""
    # The signed-in API key's id (customers): the live event stream re-checks it at every poll.
    key_id: str = ""


def _signer(request: Request) -> SessionSigner:
    return SessionSigner(request.app.state.admin_key_hash)


def _secure(request: Request) -> bool:
    settings: KeelSettings = request.app.state.settings
    return settings.env == Environment.PRODUCTION


def signed_in_user(request: Request) -> ConsoleUser | None:
    """The request's user while its key is still live (revoked key or disabled tenant: None)."""
    token = _signer(request).verify(request.cookies.get(SESSION_COOKIE))
    if token is None:
        return None
    # Its own short transaction, as api.dependencies.current_tenant does for a bearer key.
    with session_scope() as session:
        if token.kind == "tenant":
            tenant_id = ApiKeyRepository(session).live_tenant_of_key_id(token.key_id)
            if tenant_id is None:
                return None
            return ConsoleUser("tenant", token.csrf, tenant_id=tenant_id, key_id=token.key_id)
        if token.key_id == BOOTSTRAP_KEY_ID:
            # Signed with a key derived from the current admin key hash: still that key.
            return ConsoleUser("admin", token.csrf, admin=BOOTSTRAP_ADMIN)
        name = AdminKeyRepository(session).live_name(token.key_id)
        return None if name is None else ConsoleUser("admin", token.csrf, admin=name)


def require_customer(request: Request) -> ConsoleUser:
    user = signed_in_user(request)
    if user is None or user.kind != "tenant":
        raise SignInRequired()
    # The same per-tenant budget as the JSON API's requests.
    request.app.state.rate_limiter.check(user.tenant_id, request.method)
    return user


def require_provider(request: Request) -> ConsoleUser:
    user = signed_in_user(request)
    if user is None or user.kind != "admin":
        raise SignInRequired()
    return user


CustomerDep = Annotated[ConsoleUser, Depends(require_customer)]
ProviderDep = Annotated[ConsoleUser, Depends(require_provider)]
# A text field of a console form (urlencoded, parsed by FastAPI under the body cap).
FormText = Annotated[str, Form(max_length=4096)]
# The policy editor's document: bounded by KEEL_MAX_JSON_BODY_BYTES (api.body_limit).
FormDocument = Annotated[str, Form()]


def check_csrf(user: ConsoleUser, presented: str | None) -> None:
    """A form's csrf_token must be this session's (else the 403 page): checked first, before
    any change, by every console POST."""
    if not csrf_matches(user.csrf, presented):
        raise CsrfRejected()


def _home(kind: Kind) -> str:
    return f"{PREFIX}/admin" if kind == "admin" else f"{PREFIX}/jobs"


@router.get("")
def console_home(request: Request) -> Response:
    user = signed_in_user(request)
    return RedirectResponse(_home(user.kind) if user else f"{PREFIX}/sign-in", status_code=303)


def _sign_in_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    csrf = new_csrf_token()
    response = render(
        request, "sign_in.html", {"user": None, "csrf": csrf, "error": error}, status_code
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path=PREFIX,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )
    return response


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


def _identify(request: Request, key: str) -> tuple[Kind, str] | None:
    """(kind, key id) of a live admin or API key, checked as the JSON API checks bearer keys."""
    if admin_token_ok(key, request.app.state.admin_key_hash):
        return "admin", BOOTSTRAP_KEY_ID
    with session_scope() as session:
        admin = AdminKeyRepository(session).identify(key)
        if admin is not None:
            return "admin", admin[0]
        tenant = ApiKeyRepository(session).identify(key)
        if tenant is not None:
            return "tenant", tenant[0]
    return None


@router.post("/sign-in")
def sign_in(request: Request, api_key: FormText = "", csrf_token: FormText = "") -> Response:
    if not csrf_matches(request.cookies.get(SIGN_IN_CSRF_COOKIE), csrf_token):
        raise CsrfRejected()
    key = api_key.strip()
    found = _identify(request, key) if 0 < len(key) <= MAX_KEY_CHARS else None
    if found is None:
        # The key is not echoed back into the page, right or wrong.
        return _sign_in_page(request, "That key is not a live API key or admin key.", 401)
    kind, key_id = found
    cookie, _ = _signer(request).issue(kind, key_id)
    response = RedirectResponse(_home(kind), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
def sign_out(request: Request, csrf_token: FormText = "") -> Response:
    user = signed_in_user(request)
    if user is not None:
        check_csrf(user, csrf_token)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response
