"""RFC 6266 download filenames: non-Latin-1 names and quotes download correctly (issue 22)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.files.disposition import ascii_fallback, content_disposition
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl, make_file


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("train.jsonl", 'attachment; filename="train.jsonl"'),
        (
            "数据.jsonl",
            "attachment; filename=\"__.jsonl\"; filename*=UTF-8''%E6%95%B0%E6%8D%AE.jsonl",
        ),
        ("café.jsonl", "attachment; filename=\"cafe.jsonl\"; filename*=UTF-8''caf%C3%A9.jsonl"),
        (
            'a"; filename="evil.sh',
            'attachment; filename="a_; filename=_evil.sh"; '
            "filename*=UTF-8''a%22%3B%20filename%3D%22evil.sh",
        ),
        (
            "back\\slash.jsonl",
            "attachment; filename=\"back_slash.jsonl\"; filename*=UTF-8''back%5Cslash.jsonl",
        ),
        ("数据", "attachment; filename=\"download\"; filename*=UTF-8''%E6%95%B0%E6%8D%AE"),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header


def test_fallback_is_always_latin1_quoted_string_safe() -> None:
    for name in ["数据.jsonl", 'x"y', "é\\\x7f", "\u202egnp.exe", "", "   "]:
        fallback = ascii_fallback(name)
        assert fallback.encode("ascii")
        assert '"' not in fallback
        assert "\\" not in fallback
        assert fallback.strip()


@pytest.mark.parametrize("filename", ["数据.jsonl", 'quote"d.jsonl', "emoji-🙂.jsonl"])
def test_download_of_an_unusual_stored_name(
    client: TestClient, alice: Customer, session: Session, data_dir: Path, filename: str
) -> None:
    content = chat_jsonl()
    file = make_file(session, alice.tenant_id, data_dir, content=content, filename=filename)
    session.commit()
    response = client.get(f"/v1/files/{file.id}/content", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.content == content
    header = response.headers["content-disposition"]
    assert header.count('"') == 2  # one quoted-string: the fallback, no injected parameters
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == filename


def test_upload_then_download_keeps_a_unicode_name(client: TestClient, alice: Customer) -> None:
    uploaded = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("数据.jsonl", chat_jsonl())},
    ).json()
    assert uploaded["filename"] == "数据.jsonl"
    response = client.get(f"/v1/files/{uploaded['id']}/content", headers=alice.headers)
    assert response.status_code == 200
    assert "filename*=UTF-8''%E6%95%B0%E6%8D%AE.jsonl" in response.headers["content-disposition"]
