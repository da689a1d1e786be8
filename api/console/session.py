"""The console's sign-in session: a signed cookie that names a key by its id, never the key.

Signing in exchanges an API key (or an admin key) for a cookie holding
``{kind, key id, expiry, csrf}`` signed with HMAC-SHA256. The key itself is never stored, put in
a URL or in a page. Every request re-checks the key id against the database
(``ApiKeyRepository.live_tenant_of_key_id`` / ``AdminKeyRepository.live_name``), so revoking
the key or disabling its tenant signs the session out at the next click.

The signing key is derived from the deployment's admin key hash (``app.state.admin_key_hash``:
a sha256 of a strong secret, or of the key generated at first start in development): changing
the admin key signs every console session out, and no extra secret has to be configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

SESSION_COOKIE = "keel_console_session"
# Only for the sign-in form (no session exists yet): double-submit against login CSRF.
SIGN_IN_CSRF_COOKIE = "keel_console_csrf"
SESSION_SECONDS = 12 * 3600
BOOTSTRAP_KEY_ID = "bootstrap"

Kind = Literal["tenant", "admin"]


@dataclass(frozen=True)
class SessionToken:
    kind: Kind
    key_id: str
    expires_at: int
    # Per-session CSRF token: every console form posts it back (checked in api.console.auth).
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, admin_key_hash: str) -> None:
        self._key = hmac.new(
            admin_key_hash.encode("ascii"), b"keel-console-session-v1", hashlib.sha256
        ).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, kind: Kind, key_id: str, now: float | None = None) -> tuple[str, SessionToken]:
        token = SessionToken(
            kind=kind,
            key_id=key_id,
            expires_at=int((now or time.time()) + SESSION_SECONDS),
            csrf=secrets.token_urlsafe(32),
        )
        body = {"k": kind, "id": key_id, "exp": token.expires_at, "csrf": token.csrf}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}", token

    def verify(self, cookie: str | None, now: float | None = None) -> SessionToken | None:
        """The token of a cookie this deployment signed and that has not expired, else None."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 2048:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            token = SessionToken(
                kind=body["k"],
                key_id=str(body["id"]),
                expires_at=int(body["exp"]),
                csrf=body["csrf"],
            )
        except (ValueError, KeyError, TypeError):
            return None
        if token.kind not in ("tenant", "admin") or token.expires_at < (now or time.time()):
            return None
        return token


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, presented: str | None) -> bool:
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))
