"""Settings every service shares; each service subclasses this once (one class per service)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Environment shared by the dispatcher, bot and callcenter.

    Names follow the contract (`DATABASE_URL`, `SHOUHU_*`); anything unset falls
    back to a local-development default so `make run` needs no configuration.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    environment: str = Field(default="development", alias="SHOUHU_ENV")
    data_dir: Path = Field(default=Path(".shouhu"), alias="SHOUHU_DATA_DIR")
    log_level: str = Field(default="INFO", alias="SHOUHU_LOG_LEVEL")
    log_json: bool = Field(default=True, alias="SHOUHU_LOG_JSON")
    bootstrap_admin_key: str | None = Field(default=None, alias="SHOUHU_BOOTSTRAP_ADMIN_KEY")
    # The jurisdiction of the bootstrap admin key: "" means nationwide.
    bootstrap_admin_unit: str = Field(default="", alias="SHOUHU_BOOTSTRAP_ADMIN_UNIT")
    db_pool_size: int = Field(default=10, alias="SHOUHU_DB_POOL_SIZE")
    # How long a starting service waits for the database before giving up (compose starts them together).
    db_wait_s: float = Field(default=60.0, alias="SHOUHU_DB_WAIT_S")

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        # A copy-pasted example key must never guard a production deployment.
        if self.environment == "production" and self.bootstrap_admin_key in {"changeme", "admin", "test"}:
            raise ValueError("SHOUHU_BOOTSTRAP_ADMIN_KEY is a placeholder; set a real secret in production")
        return self
