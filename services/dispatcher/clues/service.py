"""Storing citizens' clue reports. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.clues.models import KINDS
from shared.audit import service as audit
from shared.ids import uuid7
from shared.sql import sql


async def store_clue(session: AsyncSession, report: dict[str, Any], *, now: datetime) -> bool:
    """Store a reported clue under the reference the citizen was given; False if it was stored already.

    It is routed to the unit of the reporter's latest case, when the reporter's
    phone is known and has one; otherwise it waits for the centre (no region).
    """
    phone = report.get("phone")
    region = None
    if phone:
        region = (await session.execute(
            sql("SELECT region_code FROM cases WHERE phone = :p ORDER BY created_at DESC LIMIT 1"),
            {"p": phone})).scalar_one_or_none()
    kind = report.get("kind") if report.get("kind") in KINDS else "other"
    reported_at = datetime.fromisoformat(report["reported_at"]) if report.get("reported_at") else now
    inserted = await session.execute(
        sql("INSERT INTO clues (id, ref, kind, value, description, channel, reporter_chat_id, reporter_phone,"
            " region_code, status, reported_at, created_at)"
            " VALUES (:id, :ref, :kind, :value, :description, :channel, :chat, :phone, :region, 'new', :reported, :now)"
            " ON CONFLICT (ref) DO NOTHING"),
        {"id": uuid7(), "ref": report["ref"], "kind": kind, "value": str(report.get("value", ""))[:500],
         "description": report.get("description"), "channel": report.get("channel", "telegram"),
         "chat": report.get("chat_id"), "phone": phone, "region": region, "reported": reported_at, "now": now})
    if not inserted.rowcount:
        return False
    audit.record(session, at=now, actor=f"citizen:{report.get('channel', 'telegram')}:{report.get('chat_id')}",
                 action="clue.reported", region_code=region, ref=report["ref"], kind=kind,
                 why="citizen reported a clue")
    return True
