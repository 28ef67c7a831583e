"""Where a citizen is in a bot dialogue (aiogram's FSM state and data), kept in PostgreSQL.

Kept here rather than in one process's memory so that a restart, or another
replica taking over the updates, continues a half-written /report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class BotDialogue(Base):
    __tablename__ = "bot_dialogues"

    # aiogram's StorageKey; thread_id and business_connection_id are optional there, stored as 0 and ''
    # because a primary key column cannot be NULL.
    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    thread_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    business_connection_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    destiny: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (Index("ix_bot_dialogues_updated_at", "updated_at"),)
