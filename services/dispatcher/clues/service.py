"""Storing citizens' clue reports. Callers own the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.clues.models import KINDS, Clue
from shared import contracts
from shared.audit import service as audit
from shared.contracts import PRIORITY
from shared.ids import uuid7
from shared.queue.service import enqueue
from shared.sql import sql

# 限时反馈: the citizen gets an answer within three days of reporting, whoever ends up handling the clue.
ANSWER_WINDOW = timedelta(hours=72)
OPEN_STATUSES = ("new", "routed")


def is_overdue(clue: Clue, now: datetime) -> bool:
    """Still waiting for its answer after the time limit."""
    return clue.status in OPEN_STATUSES and clue.answer_due_at is not None and clue.answer_due_at < now


class ClueStateError(ValueError):
    """The clue is not in a state that allows this step (e.g. answering a closed clue)."""


async def store_clue(session: AsyncSession, report: contracts.ClueReport, *, now: datetime) -> bool:
    """Store a reported clue under the reference the citizen was given; False if it was stored already.

    It is routed to the unit of the reporter's latest case, when the reporter's
    phone is known and has one; otherwise it waits for the centre (no region).
    """
    phone = report.phone
    region = None
    if phone:
        region = (await session.execute(
            sql("SELECT region_code FROM cases WHERE phone = :p ORDER BY created_at DESC LIMIT 1"),
            {"p": phone})).scalar_one_or_none()
    kind = report.kind if report.kind in KINDS else "other"
    reported_at = report.reported_at
    inserted = await session.execute(
        sql("INSERT INTO clues (id, ref, kind, value, description, channel, reporter_chat_id, reporter_phone,"
            " region_code, status, reported_at, created_at, answer_due_at)"
            " VALUES (:id, :ref, :kind, :value, :description, :channel, :chat, :phone, :region, 'new', :reported, :now,"
            " CAST(:reported AS timestamptz) + make_interval(hours => :window_h))"
            " ON CONFLICT (ref) DO NOTHING"),
        {"id": uuid7(), "ref": report.ref, "kind": kind, "value": report.value[:500],
         "description": report.description, "channel": report.channel,
         "chat": report.chat_id, "phone": phone, "region": region, "reported": reported_at, "now": now,
         "window_h": int(ANSWER_WINDOW.total_seconds() // 3600)})
    if not inserted.rowcount:
        return False
    audit.record(session, at=now, actor=f"citizen:{report.channel}:{report.chat_id}",
                 action="clue.reported", region_code=region, ref=report.ref, kind=kind,
                 why="citizen reported a clue")
    return True


async def list_clues(session: AsyncSession, *, unit: str, status: str | None = None, overdue_only: bool = False,
                     now: datetime, limit: int = 200) -> list[Clue]:
    """Clues in `unit`, overdue first, then newest. Clues with no unit yet are the centre's (nationwide keys)."""
    where = ["(region_code LIKE :unit)" if unit else "true"]
    params: dict[str, Any] = {"unit": unit + "%", "now": now, "limit": limit}
    if status:
        where.append("status = :status")
        params["status"] = status
    if overdue_only:
        where.append("status IN ('new', 'routed') AND answer_due_at < :now")
    statement = sql("SELECT * FROM clues WHERE " + " AND ".join(where) +
                    " ORDER BY (status IN ('new', 'routed') AND answer_due_at < :now) DESC, reported_at DESC"
                    " LIMIT :limit")
    return list((await session.execute(select(Clue).from_statement(statement), params)).scalars())


async def lock_clue(session: AsyncSession, clue_id: uuid.UUID, *, unit: str) -> Clue | None:
    """The clue, locked for a step, if it lies in `unit` (None otherwise: callers answer 404)."""
    clue = await session.get(Clue, clue_id, with_for_update=True)
    if clue is None or (unit and not (clue.region_code or "").startswith(unit)):
        return None
    return clue


def _audit(session: AsyncSession, clue: Clue, *, at: datetime, actor: str, action: str, **body: Any) -> None:
    audit.record(session, at=at, actor=actor, action=action, region_code=clue.region_code, ref=clue.ref, **body)


def route_clue(session: AsyncSession, clue: Clue, *, to_unit: str, actor: str, now: datetime) -> None:
    """后台流转: hand the clue to the unit that must answer it (its time limit keeps running)."""
    if clue.status not in OPEN_STATUSES:
        raise ClueStateError(f"a {clue.status} clue cannot be routed")
    before = {"region_code": clue.region_code, "status": clue.status}
    clue.region_code, clue.status, clue.routed_at, clue.routed_by = to_unit, "routed", now, actor
    _audit(session, clue, at=now, actor=actor, action="clue.routed", before=before, to=to_unit)


async def answer_clue(session: AsyncSession, clue: Clue, *, answer: str, actor: str, now: datetime) -> None:
    """限时反馈: record the answer and send it to the citizen's chat (queued in this transaction).

    Late answers are kept and marked late in the audit entry.
    """
    if clue.status not in OPEN_STATUSES:
        raise ClueStateError(f"a {clue.status} clue cannot be answered again")
    late = clue.answer_due_at is not None and now > clue.answer_due_at
    clue.answer, clue.answered_at, clue.answered_by, clue.status = answer, now, actor, "answered"
    notified = clue.reporter_chat_id is not None
    if notified:
        # Behind real-time alerts (priority 10 for high) but ahead of publicity.
        notice = contracts.SendNotice(template="clue_answered", chat_id=clue.reporter_chat_id, ref=clue.ref,
                                      answer=answer)
        await enqueue(session, [notice.job(run_at=now, priority=PRIORITY["notice"],
                                           dedupe_key=f"clue_answer:{clue.id}")], now=now)
    _audit(session, clue, at=now, actor=actor, action="clue.answered", late=late, answer=answer,
           citizen_notified=notified)


def close_clue(session: AsyncSession, clue: Clue, *, actor: str, now: datetime, note: str | None = None) -> None:
    """跟踪督办 ends: the clue was followed to its end."""
    if clue.status == "closed":
        raise ClueStateError("the clue is already closed")
    before = clue.status
    clue.status, clue.closed_at = "closed", now
    _audit(session, clue, at=now, actor=actor, action="clue.closed", before=before, note=note)


async def apply_step(session: AsyncSession, clue: Clue, *, step: str, unit: str | None, answer: str | None, actor: str,
               now: datetime) -> None:
    """One workflow step by name (the API and the console both call this)."""
    if step == "route":
        route_clue(session, clue, to_unit=unit or "", actor=actor, now=now)
    elif step == "answer":
        await answer_clue(session, clue, answer=(answer or "").strip(), actor=actor, now=now)
    elif step == "close":
        close_clue(session, clue, actor=actor, now=now)
    else:
        raise ClueStateError(f"unknown step {step!r}")
