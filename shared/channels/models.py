"""Citizens' contact channels that more than one service reads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class ChatBinding(Base):
    """A Telegram chat bound to a phone number (written by the bot, read by the dispatcher)."""

    __tablename__ = "chat_bindings"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    lang: Mapped[str] = mapped_column(String(5), server_default="zh")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    bound_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_chat_bindings_active_phone", "phone", postgresql_where=text("active")),)
