from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import MODEL_CACHE, TEST_MODEL, LiveService, e2e_redis_db
from tests.fixtures.object_store import ObjectStoreServer


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = MODEL_CACHE / TEST_MODEL
    assert (path / "keel-model.json").exists(), (
        f"{TEST_MODEL} is not cached; `make test` pulls it (keel models pull {TEST_MODEL})"
    )
    return path


@pytest.fixture(scope="module")
def live_service(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[LiveService]:
    service = LiveService(tmp_path_factory.mktemp("keel-live"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def live_service_s3(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, object_store: ObjectStoreServer
) -> Iterator[LiveService]:
    """The live deployment on an object store: API, workers and reaper each with their own
    data dir, sharing only the bucket (and Postgres, Redis)."""
    service = LiveService(
        tmp_path_factory.mktemp("keel-live-s3"),
        object_store=object_store,
        redis_db=e2e_redis_db(offset=8),  # never the broker of `live_service`, alive beside it
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()
