"""Which blob store a process uses, from its settings (shared by the API's and the worker's).

`KEEL_BLOB_URL` empty (the default): blobs are files under `KEEL_DATA_DIR`, which API and workers
must then share. `KEEL_BLOB_URL=s3://bucket/prefix`: blobs live in that bucket, API and workers
share nothing else, and `KEEL_DATA_DIR` is only each process's local working and cache
directory. The endpoint, region and credentials settings follow; unset credentials fall back to
boto3's own chain (environment, ~/.aws, instance or workload identity).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.blobs import BlobStore, LocalBlobStore


class BlobSettings(BaseSettings):
    """Mixed into KeelSettings and WorkerSettings (prefix KEEL_); alone in docker/prestart.sh."""

    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path("./var")
    blob_url: str = ""
    # Empty: AWS's endpoint for the region. MinIO / SeaweedFS: http://minio:9000; GCS's S3
    # interoperability API: https://storage.googleapis.com with an HMAC key.
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Empty: path-style with a custom endpoint (MinIO, SeaweedFS, GCS), boto3's choice for AWS.
    s3_addressing_style: Literal["", "auto", "path", "virtual"] = ""
    # Multipart part size: the most an upload holds in memory at once (S3's minimum is 5 MiB).
    s3_part_size_mb: int = 8

    @model_validator(mode="after")
    def _valid_blob_url(self) -> BlobSettings:
        if self.blob_url:
            parsed = urlparse(self.blob_url)
            if parsed.scheme != "s3" or not parsed.netloc:
                raise ValueError(
                    "KEEL_BLOB_URL must be empty (local files) or s3://bucket[/prefix]"
                )
        if self.s3_part_size_mb < 5:
            raise ValueError("KEEL_S3_PART_SIZE_MB must be at least 5 (S3's smallest part)")
        return self

    def blob_store(self) -> BlobStore:
        if not self.blob_url:
            return LocalBlobStore(self.data_dir)
        from db.blobs_s3 import S3BlobStore

        parsed = urlparse(self.blob_url)
        return S3BlobStore(
            _s3_client(
                self.s3_endpoint_url,
                self.s3_region,
                self.s3_access_key_id,
                self.s3_secret_access_key.get_secret_value(),
                self.s3_addressing_style,
            ),
            parsed.netloc,
            parsed.path,
            part_bytes=self.s3_part_size_mb * 1024 * 1024,
        )


@lru_cache(maxsize=4)
def _s3_client(endpoint: str, region: str, key_id: str, secret: str, addressing: str) -> object:
    # One client per process and configuration: building one costs tens of milliseconds, and
    # botocore clients are thread-safe (the API's request threads share it).
    import boto3
    from botocore.config import Config

    style = addressing or ("path" if endpoint else "auto")
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or None,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=Config(
            s3={"addressing_style": style},
            # Checksums only where S3 requires them: the CRC32 headers boto3 sends by default
            # since 1.36 are refused by GCS's interoperability API and some S3-compatibles.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        ),
    )
