"""A worker's local copies of a job's files: removed after the job with an object store, never
with the local store (there the data dir is the storage itself)."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.object_store import ObjectStoreServer
from worker.job import ClaimedJob
from worker.runner import _drop_working_copies
from worker.settings import WorkerSettings


def _job() -> ClaimedJob:
    return ClaimedJob(
        id="ftjob-1",
        tenant_id="org-1",
        model="m",
        token=1,
        attempts=1,
        training_storage_path="files/org-1/file-1",
        validation_storage_path=None,
        hyperparameters={},
        safety={},
        seed=0,
        suffix=None,
    )


def _working_copies(data_dir: Path) -> list[Path]:
    checkpoint = data_dir / "artifacts/org-1/ftjob-1/checkpoints/step-00000002/state.json"
    training = data_dir / "files/org-1/file-1"
    other_job = data_dir / "artifacts/org-1/ftjob-2/adapter.zip"
    for path in (checkpoint, training, other_job):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return [checkpoint, training, other_job]


def test_local_store_keeps_everything(tmp_path: Path) -> None:
    paths = _working_copies(tmp_path)
    settings = WorkerSettings(data_dir=tmp_path)
    _drop_working_copies(_job(), settings, settings.blob_store())
    assert all(p.exists() for p in paths)


def test_object_store_worker_drops_the_jobs_copies_only(
    tmp_path: Path, object_store: ObjectStoreServer
) -> None:
    checkpoint, training, other_job = _working_copies(tmp_path)
    env = object_store.env("w")
    settings = WorkerSettings(
        data_dir=tmp_path,
        blob_url=env["KEEL_BLOB_URL"],
        s3_endpoint_url=env["KEEL_S3_ENDPOINT_URL"],
        s3_access_key_id=env["KEEL_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=env["KEEL_S3_SECRET_ACCESS_KEY"],  # type: ignore[arg-type]
    )
    _drop_working_copies(_job(), settings, settings.blob_store())
    assert not checkpoint.exists()
    assert not (tmp_path / "artifacts/org-1/ftjob-1").exists()
    assert not training.exists()
    assert other_job.exists()
