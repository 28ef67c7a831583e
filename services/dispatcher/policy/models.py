"""Policy versions: every policy ever used, immutable, so a task can always find the playbook it started with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class PolicyVersion(Base):
    __tablename__ = "policy_versions"

    # First 16 hex digits of the SHA-256 of the policy's canonical JSON.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
