"""screening.fingerprint: the key under which screening results are cached."""

from __future__ import annotations

import re
import sys

import pytest

import screening


def test_the_fingerprint_follows_the_screening_settings_and_nothing_else() -> None:
    settings = {"enabled": True, "max_flagged_fraction": 0.05, "max_flagged_rows": 10}
    first = screening.fingerprint(settings)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert screening.fingerprint(dict(reversed(list(settings.items())))) == first  # key order
    for changed in ({"max_flagged_fraction": 0.1}, {"max_flagged_rows": None}, {"enabled": False}):
        assert screening.fingerprint({**settings, **changed}) != first


def test_a_new_screener_is_a_new_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    version = screening.screener_version()
    assert re.fullmatch(r"[0-9a-f]{64}", version)
    before = screening.fingerprint({"enabled": True})
    # The module, not the function the package re-exports under the same name.
    module = sys.modules["screening.fingerprint"]
    monkeypatch.setattr(module, "screener_version", lambda: "another screener")
    assert screening.fingerprint({"enabled": True}) != before
