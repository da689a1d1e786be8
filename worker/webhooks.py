"""Send one webhook delivery: claim the outbox row, check the destination again, sign, POST,
record the attempt and schedule the next one.

Runs in the webhooks queue's worker (worker.tasks.deliver_webhook). Sender safety:
- the URL is checked again (https in production) and its host resolved here; every address it
  resolves to must pass the policy (db.webhook_targets), and the connection goes to the address
  that was checked (the Host header and TLS SNI / certificate check keep the name), so a DNS
  answer that changes between the check and the connect cannot redirect the request;
- no redirects are followed (a 3xx is a failed attempt), no proxy from the environment is used,
  every phase has a short timeout, and the response body is never read or stored.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook

from db.repositories.policy import PolicyRepository
from db.repositories.webhooks import DELIVERED, FAILED, PENDING, WebhookOutboxRepository
from db.session import session_scope
from db.settings import Environment, KeelSettings, get_settings
from db.webhook_targets import (
    IPAddress,
    TargetRefused,
    Unresolvable,
    check_url,
    checked_addresses,
    parse_ranges,
)

log = logging.getLogger("keel.webhooks")
USER_AGENT = "Keel-Webhooks/1.0"


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    # The destination itself is refused (URL or address): retrying cannot help.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(secret: str, delivery_id: str, payload: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`."""
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, at, payload),
    }


def _pinned_url(url: str, address: IPAddress) -> str:
    """``url`` with its host replaced by the checked address (port, path and query kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def post_signed(
    url: str,
    secret: str,
    delivery_id: str,
    payload: str,
    *,
    allowed_ranges: list[str],
    require_https: bool,
    timeout: float,
) -> AttemptResult:
    """One signed POST to ``url``; never raises for network or receiver failures."""
    try:
        scheme, host, port = check_url(url, require_https=require_https)
        address = checked_addresses(host, port, parse_ranges(allowed_ranges))[0]
    except Unresolvable as exc:
        return AttemptResult(None, f"the URL's {exc}")
    except TargetRefused as exc:
        return AttemptResult(None, f"destination refused: the URL {exc}", refused=True)
    parts = urlsplit(url)
    host_header = parts.netloc.rsplit("@", 1)[-1]
    headers = {
        **signed_headers(secret, delivery_id, payload, datetime.now(UTC)),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": host_header,
    }
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(
                "POST",
                _pinned_url(url, address),
                content=payload.encode("utf-8"),
                headers=headers,
                extensions=extensions,
            )
            # stream=True and close unread: the receiver's body is neither read nor stored.
            response = client.send(request, stream=True)
            response.close()
    except httpx.TimeoutException:
        return AttemptResult(None, "timeout")
    except httpx.HTTPError as exc:
        return AttemptResult(None, f"connection failed ({type(exc).__name__})")
    code = response.status_code
    if 300 <= code < 400:
        return AttemptResult(code, f"HTTP {code} (redirects are not followed)")
    return AttemptResult(code, None if 200 <= code < 300 else f"HTTP {code}")


def retry_delay(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, drawn from [d/2, d]."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def deliver(
    delivery_id: str, settings: KeelSettings | None = None, now: datetime | None = None
) -> float | None:
    """One attempt at a delivery if it is due and not in flight elsewhere.

    Returns the countdown for the queue when the next attempt should be scheduled on it now,
    None otherwise (delivered, given up, not claimable, or left to the dispatcher).
    """
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    hold = timedelta(seconds=3 * settings.webhook_timeout_seconds + 30)
    with session_scope() as session:
        claimed = WebhookOutboxRepository(session).claim(delivery_id, now, hold)
        if claimed is None:
            return None
        delivery, endpoint = claimed
        url, secret, payload = endpoint.url, endpoint.secret, delivery.payload
        enabled, attempts, created_at = endpoint.enabled, delivery.attempts, delivery.created_at
        allowed = list(PolicyRepository(session).current().webhooks.allowed_private_ranges)
    if not enabled:
        result = AttemptResult(None, "endpoint disabled", refused=True)
    else:
        try:
            result = post_signed(
                url,
                secret,
                delivery_id,
                payload,
                allowed_ranges=allowed,
                require_https=settings.env == Environment.PRODUCTION,
                timeout=settings.webhook_timeout_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never a stuck row
            log.exception("webhook %s: unexpected error while sending", delivery_id)
            result = AttemptResult(None, f"send error ({type(exc).__name__})")
    finished = datetime.now(UTC)
    countdown: float | None = None
    with session_scope() as session:
        outbox = WebhookOutboxRepository(session)
        if result.ok:
            outbox.record_attempt(
                delivery_id,
                at=finished,
                status_code=result.status_code,
                error=None,
                outcome=DELIVERED,
            )
        elif result.refused or (
            finished - created_at >= timedelta(seconds=settings.webhook_retry_window_seconds)
        ):
            outbox.record_attempt(
                delivery_id,
                at=finished,
                status_code=result.status_code,
                error=result.error,
                outcome=FAILED,
            )
            log.warning("webhook %s failed for good: %s", delivery_id, result.error)
        else:
            delay = retry_delay(
                attempts + 1,
                settings.webhook_retry_base_seconds,
                settings.webhook_retry_max_interval_seconds,
            )
            due = finished + timedelta(seconds=delay)
            inline = delay <= settings.webhook_inline_retry_max_seconds
            grace = timedelta(seconds=settings.webhook_dispatch_grace_seconds)
            outbox.record_attempt(
                delivery_id,
                at=finished,
                status_code=result.status_code,
                error=result.error,
                outcome=PENDING,
                next_attempt_at=due,
                # Scheduled on the queue: the dispatcher steps in only if that message is lost.
                dispatch_after=due + grace if inline else due,
            )
            countdown = delay if inline else None
            log.info("webhook %s: %s; retry in %.1f s", delivery_id, result.error, delay)
    return countdown
