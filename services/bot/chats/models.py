"""Every chat that has talked to the bot, bound or not: its language."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class BotChat(Base):
    __tablename__ = "bot_chats"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    lang: Mapped[str] = mapped_column(String(5), server_default="zh")
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
