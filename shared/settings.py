"""Settings every service shares; each service subclasses this once (one class per service)."""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.clock import Clock, make_clock


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
    # The audit chain's HMAC key (shared/audit/keys.py). Never stored in the database; every process that
    # writes or verifies the log needs the same one. Unset in development: one kept in <data_dir>/audit.key.
    audit_key: SecretStr | None = Field(default=None, alias="SHOUHU_AUDIT_KEY")
    # The password of the services' database role (shared/db_roles.py); `shouhu migrate` sets it on the role.
    # Unset: none (the embedded server and local test servers trust local connections).
    service_db_password: SecretStr | None = Field(default=None, alias="SHOUHU_SERVICE_DB_PASSWORD")
    # How much faster than real time the services' clock runs (demo, simulation): deadlines, retries and
    # visits are compressed; leases, rate limits and timeouts at providers stay in real seconds (shared/clock.py).
    time_scale: float = Field(default=1.0, gt=0, alias="SHOUHU_TIME_SCALE")
    # Where the fast clock meets real time; every process of one run needs the same (`shouhu up` sets it).
    # Unset: shared.clock.DEFAULT_EPOCH.
    time_epoch: datetime | None = Field(default=None, alias="SHOUHU_TIME_EPOCH")

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        # A copy-pasted example key must never guard a production deployment.
        if self.environment == "production" and self.bootstrap_admin_key in {"changeme", "admin", "test"}:
            raise ValueError("SHOUHU_BOOTSTRAP_ADMIN_KEY is a placeholder; set a real secret in production")
        if self.environment != "development":
            key = self.audit_key.get_secret_value() if self.audit_key else ""
            if key.strip().lower() in PLACEHOLDERS or len(key) < 32:
                raise ValueError(
                    "SHOUHU_AUDIT_KEY is unset or a placeholder (at least 32 characters outside development); "
                    "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            password = self.service_db_password.get_secret_value() if self.service_db_password else None
            if password is not None and password.strip().lower() in PLACEHOLDERS:
                raise ValueError("SHOUHU_SERVICE_DB_PASSWORD is a placeholder; set a real secret")
        return self

    def audit_secret(self) -> str:
        """The audit key: SHOUHU_AUDIT_KEY, or in development the one kept under the data directory.

        Kept like `shouhu up`'s admin key: made once (0600), then reused by every
        process of this checkout (`up`, `serve`, `migrate`, `audit checkpoint`), so
        they all seal and check with the same key.
        """
        if self.audit_key is not None:
            return self.audit_key.get_secret_value()
        if self.environment != "development":  # the validator refuses this; never fall back to a file there
            raise ValueError("SHOUHU_AUDIT_KEY is not set")
        path = self.data_dir / "audit.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def clock(self) -> Clock:
        """The services' clock: wall time, or a fast clock when SHOUHU_TIME_SCALE is not 1."""
        return make_clock(self.time_scale, self.time_epoch)

    def service_password(self) -> str | None:
        return self.service_db_password.get_secret_value() if self.service_db_password else None


# Values copied from examples and tutorials: refused as secrets outside development.
PLACEHOLDERS = {"", "changeme", "change-me", "admin", "test", "secret", "password", "shouhu", "example", "none"}
