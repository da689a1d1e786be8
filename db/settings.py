"""Settings shared by the API and the worker's persistence layer (env prefix KEEL_, `.env`)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "change-me-admin-key", "changeme", "admin", "secret"}
)
MIN_ADMIN_KEY_LENGTH = 24


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    PRODUCTION = "production"


class KeelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", env_file=".env", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///./var/keel.db"
    broker_url: str = "sqla+sqlite:///./var/broker.db"
    data_dir: Path = Path("./var")
    max_upload_bytes: int = 512 * 1024 * 1024
    # JSON request bodies (job create, policy PUT, tenant create) are capped on the bytes
    # received, before any parsing; uploads keep their own streamed cap above.
    max_json_body_bytes: int = 1024 * 1024
    admin_key: str = "change-me-admin-key"
    policy_file: Path = Path("policy.yaml")

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> KeelSettings:
        if self.env == Environment.DEVELOPMENT:
            return self
        if self.admin_key in PLACEHOLDER_SECRETS or len(self.admin_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"KEEL_ADMIN_KEY must be a random value of at least {MIN_ADMIN_KEY_LENGTH} "
                f"characters when KEEL_ENV={self.env.value}"
            )
        if self.max_upload_bytes <= 0:
            raise ValueError("KEEL_MAX_UPLOAD_BYTES must be positive")
        if self.max_json_body_bytes <= 0:
            raise ValueError("KEEL_MAX_JSON_BODY_BYTES must be positive")
        return self

    @property
    def resolved_policy_file(self) -> Path:
        """The policy file; a relative path that is not under the cwd is looked up in the repo."""
        if self.policy_file.is_absolute() or self.policy_file.exists():
            return self.policy_file
        return REPO_ROOT / self.policy_file


@lru_cache(maxsize=1)
def get_settings() -> KeelSettings:
    return KeelSettings()
