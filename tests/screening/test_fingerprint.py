"""screening.fingerprint: the key under which screening results are cached."""

from __future__ import annotations

import re

import screening


def test_the_fingerprint_follows_the_screening_settings_and_nothing_else() -> None:
    settings = {"enabled": True, "max_flagged_fraction": 0.05, "max_flagged_rows": 10}
    first = screening.fingerprint(settings)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert screening.fingerprint(dict(reversed(list(settings.items())))) == first  # key order
    for changed in ({"max_flagged_fraction": 0.1}, {"max_flagged_rows": None}, {"enabled": False}):
        assert screening.fingerprint({**settings, **changed}) != first


def test_the_screener_version_covers_its_own_files() -> None:
    version = screening.screener_version()
    assert re.fullmatch(r"[0-9a-f]{64}", version)
    assert screening.screener_version() == version  # stable within a process
    assert version not in screening.fingerprint({})  # mixed with the settings, not appended
