"""API keys: stored as a SHA-256 of their secret, each with a role and a unit (region-code prefix)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Public part of the key, shown in logs and audit entries ("shk_<key_id>_<secret>").
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    # Region-code prefix: "33" province, "3301" city, "330106" district, "" nationwide.
    unit: Mapped[str] = mapped_column(String(6))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]
    # Written by KeyCache at most once a minute per key and process (LAST_USED_EVERY_S).
    last_used_at: Mapped[datetime | None]
