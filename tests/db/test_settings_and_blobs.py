from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from db.blobs import BlobTooLargeError, LocalBlobStore
from db.repositories.policy import load_policy_file
from db.settings import REPO_ROOT, KeelSettings


def test_published_admin_key_is_refused_in_every_mode() -> None:
    # Issue 22: development used to accept the published example key silently.
    for env in ("development", "testing", "production"):
        with pytest.raises(ValidationError, match="KEEL_ADMIN_KEY is a published example value"):
            KeelSettings(env=env, admin_key="change-me-admin-key")
    strong = secrets.token_urlsafe(32)
    assert KeelSettings(env="production", admin_key=strong).admin_key == strong


def test_repo_policy_file_has_safe_defaults() -> None:
    policy = load_policy_file(REPO_ROOT / "policy.yaml")
    assert policy.customer_may_change.method is False
    assert policy.allowed_models


def test_put_stream_is_atomic_and_capped(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    path, size, sha = store.put_stream("org-a", "file-1", [b"ab", b"c"], max_bytes=3)
    assert (path, size) == ("files/org-a/file-1", 3)
    assert sha == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with store.open(path) as handle:
        assert handle.read() == b"abc"
    with pytest.raises(BlobTooLargeError):
        store.put_stream("org-a", "file-2", [b"abcd"], max_bytes=3)
    assert sorted(p.name for p in (tmp_path / "files" / "org-a").iterdir()) == ["file-1"]
    store.delete(path)
    assert not store.path_for(path).exists()


@pytest.mark.parametrize(("tenant", "obj"), [("..", "x"), ("org-a", "../b"), ("a/b", "c")])
def test_unsafe_components_are_refused(tmp_path: Path, tenant: str, obj: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        LocalBlobStore(tmp_path).put_stream(tenant, obj, [b"x"], 10)


def test_path_for_refuses_escapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalBlobStore(tmp_path).path_for("../outside")


def test_delete_tree_removes_only_the_named_directory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    (tmp_path / "artifacts" / "t" / "job" / "adapter").mkdir(parents=True)
    (tmp_path / "artifacts" / "t" / "job" / "adapter" / "w.safetensors").write_bytes(b"w")
    (tmp_path / "artifacts" / "t" / "other").mkdir()
    store.delete_tree("artifacts/t/job")
    assert not (tmp_path / "artifacts" / "t" / "job").exists()
    assert (tmp_path / "artifacts" / "t" / "other").is_dir()
    store.delete_tree("artifacts/t/job")  # already gone: no error


def test_delete_tree_refuses_the_root_and_escapes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    with pytest.raises(ValueError, match="data dir itself"):
        store.delete_tree(".")
    with pytest.raises(ValueError, match="escapes"):
        store.delete_tree("../outside")
    assert (tmp_path / "outside").is_dir()
    assert (tmp_path / "data").is_dir()
