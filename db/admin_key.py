"""The provider admin key as the API checks it: a sha256, never the key itself at rest.

Production and testing set KEEL_ADMIN_KEY (db.settings refuses weak or published values). The
embedded development default has no published key to fall back on: the first start generates a
random one, hands it to the caller to print once, and stores only its hash in
``KEEL_DATA_DIR/admin_key.sha256`` (mode 0600). Later starts, and other API processes sharing the
data dir, read the hash. A lost key: delete that file and restart to get a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from db.settings import Environment, KeelSettings

HASH_FILE = "admin_key.sha256"
GENERATED_PREFIX = "sk-keel-admin-"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hash_admin_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def admin_key_matches(token: str | None, key_hash: str) -> bool:
    """Constant-time check of a presented token against the stored hash."""
    if not token:
        return False
    return hmac.compare_digest(hash_admin_key(token), key_hash)


def _read_hash(path: Path) -> str:
    stored = path.read_text(encoding="ascii").strip()
    if not _HEX64.match(stored):
        raise ValueError(f"{path} does not hold a sha256 hex digest; delete it to generate a key")
    return stored


def _publish_hash(path: Path, digest: str) -> bool:
    """Write the hash file atomically; False if another process published one first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".admin_key.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(digest + "\n")
        os.chmod(tmp, 0o600)
        # link() fails if the name exists: exactly one of several starting processes wins.
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def resolve_admin_key_hash(settings: KeelSettings, announce: Callable[[str, Path], None]) -> str:
    """The admin key hash to check requests against; generates the development key if needed.

    ``announce(key, hash_file)`` is called once, only when a key was generated, so the caller
    can print it; the plaintext exists nowhere else.
    """
    if settings.admin_key:
        return hash_admin_key(settings.admin_key)
    if settings.env != Environment.DEVELOPMENT:  # db.settings refuses this; belt and braces
        raise ValueError(f"KEEL_ADMIN_KEY must be set when KEEL_ENV={settings.env.value}")
    path = Path(settings.data_dir) / HASH_FILE
    if path.exists():
        return _read_hash(path)
    key = GENERATED_PREFIX + secrets.token_urlsafe(32)
    digest = hash_admin_key(key)
    if not _publish_hash(path, digest):
        return _read_hash(path)
    announce(key, path)
    return digest
