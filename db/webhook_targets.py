"""Where webhooks may go: the URL rules and the address rule, checked at registration (API) and
again at every delivery (worker, on the address it will actually connect to). Pure Python.

Refused unless the provider's policy allows a range (``webhooks.allowed_private_ranges``):
loopback, link-local (169.254.0.0/16 holds the cloud metadata services), private, shared
(CGNAT), multicast, reserved and unspecified addresses, and the well-known metadata addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
# Cloud metadata endpoints outside link-local (AWS' IPv6 one, Alibaba's 100.100.100.200).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "169.254.169.254")
)


class TargetRefused(ValueError):
    """A URL or address a webhook must not be sent to; the message says why (no secrets)."""


class AddressRefused(TargetRefused):
    """The host resolves to an address the policy does not allow."""


class Unresolvable(TargetRefused):
    """The host does not resolve now (refused at registration, retried at delivery)."""


def parse_ranges(ranges: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(r, strict=False) for r in ranges)


def address_refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` may not receive webhooks, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for flag, what in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_unspecified", "an unspecified address"),
    ):
        if getattr(address, flag):
            return what
    if not address.is_global:
        return "not a public address"
    return None


def check_url(url: str, *, require_https: bool) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL webhooks may be sent to, else TargetRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("must be an http(s) URL")
    if require_https and scheme != "https":
        raise TargetRefused("must use https")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials (user:password@)")
    if parts.fragment:
        raise TargetRefused("must not have a fragment (#…)")
    host = parts.hostname
    if not host:
        raise TargetRefused("has no host")
    if not host.isascii() or not parts.netloc.isascii():
        # The Host header and TLS name must be ASCII: the customer gives the punycode form.
        raise TargetRefused("must have an ASCII host (use the punycode form, xn--…)")
    return scheme, host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"host {host!r} does not resolve ({type(exc).__name__})") from None
    seen: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    if not seen:
        raise Unresolvable(f"host {host!r} does not resolve")
    return seen


def checked_addresses(host: str, port: int, allowed: Sequence[IPNetwork]) -> list[IPAddress]:
    """The host's addresses when every one of them is allowed, else TargetRefused.

    All must pass, not one: a name that answers a public and a private address would otherwise
    let a later lookup (or a different resolver) land on the private one.
    """
    addresses = resolve(host, port)
    for address in addresses:
        why = address_refusal(address, allowed)
        if why is not None:
            raise AddressRefused(
                f"resolves to {why} ({address}), which the provider does not allow"
            )
    return addresses
