"""Secrets: weak production keys refused without echo; the development admin key is generated."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from db.admin_key import (
    GENERATED_PREFIX,
    HASH_FILE,
    admin_key_matches,
    hash_admin_key,
    resolve_admin_key_hash,
)
from db.settings import KeelSettings, estimated_entropy_bits

STRONG = "Zx8-kQ2vN_p0LrT7wYb3HsE9mCj4FgUa6DqRi1oVeKn5"  # a token_urlsafe(32)-shaped key
HEX32 = "3f9a1c7e52b84d06a9e1f2c3b4d5e6f7"  # one uuid4().hex


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a" * 32, "too little entropy"),
        ("a" * 200, "too little entropy"),
        ("ab" * 40, "too little entropy"),
        ("abcdefgh" * 4, "too little entropy"),
        ("Zx8-kQ2vN_p0LrT7", "shorter than 32"),
        ("change-me-" + STRONG, "published example"),
        ("", "is not set"),
    ],
)
def test_production_refuses_weak_admin_keys_without_echoing_them(key: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeelSettings(env="production", admin_key=key)
    message = str(caught.value)
    assert "KEEL_ADMIN_KEY" in message
    assert reason in message
    if key:
        assert key not in message
        assert key[:12] not in message


@pytest.mark.parametrize("key", [STRONG, HEX32, HEX32 + HEX32[::-1]])
def test_production_accepts_random_keys(key: str) -> None:
    assert KeelSettings(env="production", admin_key=key).admin_key == key


def test_entropy_estimate() -> None:
    assert estimated_entropy_bits("a" * 64) == 0
    assert estimated_entropy_bits("ab" * 32) == pytest.approx(64)
    assert estimated_entropy_bits(STRONG) > 180


def test_production_metrics_token_is_checked_like_the_admin_key() -> None:
    with pytest.raises(ValidationError, match="KEEL_METRICS_TOKEN has too little entropy"):
        KeelSettings(env="production", admin_key=STRONG, metrics_token="m" * 40)
    ok = KeelSettings(env="production", admin_key=STRONG, metrics_token=HEX32 + "Qz")
    assert ok.metrics_token


def test_development_generates_the_admin_key_once(tmp_path: Path) -> None:
    settings = KeelSettings(env="development", admin_key="", data_dir=tmp_path)
    announced: list[str] = []
    digest = resolve_admin_key_hash(settings, lambda key, _: announced.append(key))
    [key] = announced
    assert key.startswith(GENERATED_PREFIX)
    assert len(key) > 40
    assert admin_key_matches(key, digest)
    assert not admin_key_matches("change-me-admin-key", digest)
    hash_file = tmp_path / HASH_FILE
    stored = hash_file.read_text()
    assert stored.strip() == digest == hash_admin_key(key)
    assert key not in stored  # only the hash is kept
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o600
    # The next start (or a second API process) reads the hash and prints nothing.
    again = resolve_admin_key_hash(settings, lambda key, _: announced.append(key))
    assert again == digest
    assert announced == [key]
    assert [p.name for p in tmp_path.iterdir()] == [HASH_FILE]  # no temp file left behind


def test_a_set_key_is_used_and_nothing_is_written(tmp_path: Path) -> None:
    settings = KeelSettings(env="development", admin_key="my-own-dev-key", data_dir=tmp_path)
    digest = resolve_admin_key_hash(settings, lambda *_: pytest.fail("nothing to announce"))
    assert admin_key_matches("my-own-dev-key", digest)
    assert not list(tmp_path.iterdir())


def test_a_corrupt_hash_file_fails_start_up_clearly(tmp_path: Path) -> None:
    (tmp_path / HASH_FILE).write_text("not a digest")
    settings = KeelSettings(env="development", admin_key="", data_dir=tmp_path)
    with pytest.raises(ValueError, match="delete it to generate a key"):
        resolve_admin_key_hash(settings, lambda *_: None)
