"""The callcenter's contract: the jobs it consumes, and what it lets the other services read.

The callcenter owns call attempts, the do-not-call list and seats. Other
services never touch those tables; they send the jobs below and read through
the functions at the end of this file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.contact import CallWindow, ContactRequest, ContactStop
from shared.contracts.vocab import CALLCENTER_QUEUE
from shared.sql import sql

# ---- jobs the callcenter consumes ------------------------------------------------------------------------


class PlaceCall(ContactRequest):
    """An automated 96110 warning call with a keypad answer (1 understood, 2 an officer, 3 money sent)."""

    KIND: ClassVar[str] = "call.auto"
    QUEUE: ClassVar[str] = CALLCENTER_QUEUE

    call_window: CallWindow | None = Field(default=None, description="None: calls may go out at any hour")


class OperatorCall(ContactRequest):
    """A task for the seat operators: claimed by a seat of the task's unit (the job's `scope`), called, disposed.

    Claim order is the job's priority (emergencies first, then tier) and then
    its `due_at` (the task's deadline); the dispatcher keeps both current when
    a task is raised, reassigned or closed.
    """

    KIND: ClassVar[str] = "call.operator"
    QUEUE: ClassVar[str] = CALLCENTER_QUEUE


class StopCalls(ContactStop):
    """Cancel the task's automated calls that already left the queue: queued or ringing at Twilio are
    cancelled (Status=canceled), one in progress is ended (Status=completed). None is retried.

    A seat operator's call is never cut, and neither is the automated call the
    citizen is using right now to reach an officer (`except_attempt`, key 2).
    """

    KIND: ClassVar[str] = "call.stop"
    QUEUE: ClassVar[str] = CALLCENTER_QUEUE

    except_attempt: int | None = Field(default=None, description="the auto_call attempt to leave alone")


# ---- what the callcenter lets others read ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRecord:
    created_at: datetime
    updated_at: datetime
    channel: str
    attempt: int
    status: str
    answered_by: str | None
    digits: str | None
    outcome: str | None
    error: str | None
    duration_s: int | None


async def calls_for_task(session: AsyncSession, task_id: uuid.UUID) -> list[CallRecord]:
    """Every call made for a task (automated and by seats), oldest first."""
    rows = (await session.execute(
        sql("SELECT created_at, updated_at, channel, attempt, status, answered_by, digits, outcome, error, duration_s"
            " FROM call_attempts WHERE task_id = :t ORDER BY created_at, id"), {"t": task_id})).all()
    return [CallRecord(**r._mapping) for r in rows]
