"""Chats and bindings: who the bot talks to, in which language, bound to which phone. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shared.audit import service as audit
from shared.phone import mask_phone
from shared.sql import sql


async def seen(session: AsyncSession, *, chat_id: int, user_id: int | None) -> str:
    """Note a chat the first time it talks to us; return its language."""
    row = (await session.execute(
        sql("INSERT INTO bot_chats (chat_id, user_id) VALUES (:c, :u)"
            " ON CONFLICT (chat_id) DO UPDATE SET user_id = COALESCE(EXCLUDED.user_id, bot_chats.user_id)"
            " RETURNING lang"), {"c": chat_id, "u": user_id})).one()
    return row.lang


async def set_lang(session: AsyncSession, *, chat_id: int, lang: str) -> None:
    await session.execute(sql("UPDATE bot_chats SET lang = :l WHERE chat_id = :c"), {"c": chat_id, "l": lang})
    await session.execute(sql("UPDATE chat_bindings SET lang = :l WHERE chat_id = :c"), {"c": chat_id, "l": lang})


async def bind(session: AsyncSession, *, chat_id: int, user_id: int, phone: str, lang: str, now: datetime) -> None:
    """Bind the chat to the citizen's own phone number (re-binding replaces the number)."""
    await session.execute(
        sql("INSERT INTO chat_bindings (chat_id, phone, user_id, lang, active, bound_at)"
            " VALUES (:c, :p, :u, :l, true, :now)"
            " ON CONFLICT (chat_id) DO UPDATE SET phone = EXCLUDED.phone, user_id = EXCLUDED.user_id,"
            " lang = EXCLUDED.lang, active = true, bound_at = EXCLUDED.bound_at"),
        {"c": chat_id, "p": phone, "u": user_id, "l": lang, "now": now})
    audit.record(session, at=now, actor=f"citizen:telegram:{chat_id}", action="citizen.bound",
                 phone=mask_phone(phone), why="shared their own contact in the bot")


async def unbind(session: AsyncSession, *, chat_id: int, now: datetime, why: str) -> bool:
    """Stop all messages to this chat; True when there was an active binding."""
    result = await session.execute(
        sql("UPDATE chat_bindings SET active = false WHERE chat_id = :c AND active"), {"c": chat_id})
    if result.rowcount:
        audit.record(session, at=now, actor=f"citizen:telegram:{chat_id}", action="citizen.unbound", why=why)
    return bool(result.rowcount)


async def bound_phone(session: AsyncSession, *, chat_id: int) -> str | None:
    return (await session.execute(
        sql("SELECT phone FROM chat_bindings WHERE chat_id = :c AND active"), {"c": chat_id})).scalar_one_or_none()
