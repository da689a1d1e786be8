"""What tenant API keys and admin keys share: how a key is minted, stored and marked used.

A key is shown once; only its sha256 is stored, with a short prefix the owner can recognise it
by in a listing. ``last_used_at`` is written at most once per ``LAST_USED_RESOLUTION`` so that
authenticating is a read on almost every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MintedKey:
    plaintext: str
    key_hash: str
    key_prefix: str


def mint_key(scheme: str) -> MintedKey:
    """A new random key under ``scheme`` (e.g. ``sk-keel-``): 32 random bytes, URL-safe."""
    plaintext = scheme + secrets.token_urlsafe(32)
    return MintedKey(plaintext, hash_api_key(plaintext), plaintext[: len(scheme) + 4])


def mark_used(
    session: Session, model: Any, key_id: str, last_used_at: datetime | None, now: datetime
) -> None:
    """Record that key ``key_id`` (a row of ``model``) was used, unless it was very recently."""
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(model).where(model.id == key_id).values(last_used_at=now))
