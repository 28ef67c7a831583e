"""One contact attempt on one channel, as the dispatcher's plan asks for it (the common part of every channel job).

The dispatcher numbers each attempt per channel (`attempt`); the channel keeps
one record per (task, channel, attempt), so a job that runs twice never
contacts the citizen twice for the same attempt. Everything a channel needs
to act travels in the job (phone, fraud type, tier, deadline, call window):
no channel reads the dispatcher's tables to do its work.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from shared.clock import LOCAL_TZ
from shared.contracts.base import JobPayload
from shared.contracts.vocab import Channel, Outcome, StopReason, Tier


class CallWindow(BaseModel):
    """The hours (citizen's local time) calls may go out; a task's policy sets it per tier."""

    start: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["08:00"])
    end: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["21:00"])
    timezone: str = LOCAL_TZ.key

    def opening(self, when: datetime) -> datetime:
        """The earliest moment at or after `when` inside the window."""
        return next_call_time(self, when)


def next_call_time(window: CallWindow | None, when: datetime) -> datetime:
    """The earliest moment at or after `when` that `window` allows a call (no window: any time)."""
    if window is None:
        return when
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    local = when.astimezone(ZoneInfo(window.timezone))
    if start <= local.time() < end:
        return when
    opening = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if local.time() >= end:
        opening += timedelta(days=1)
    return opening.astimezone(when.tzinfo)


class ContactRequest(JobPayload):
    """Contact the citizen once on one channel, for one task (subclasses name the channel's job kind)."""

    task_id: uuid.UUID
    case_id: uuid.UUID
    channel: Channel
    attempt: int = Field(ge=1, description="numbers the attempts per task and channel")
    tier: Tier
    phone: str = Field(description="E.164")
    region_code: str
    fraud_type: str
    due_at: datetime
    emergency: bool = Field(default=False, description="money already sent: a person, at once")
    reason: str = ""


class ContactStop(JobPayload):
    """Stop contacting the citizen about this task: they answered, it closed, or a person takes over.

    The dispatcher cancels the task's queued automated jobs in the same
    transaction; this job reaches what already left the queue (a robocall
    ringing or in progress, an alert on the citizen's screen).
    """

    task_id: uuid.UUID
    reason: StopReason
    outcome: Outcome | None = Field(default=None, description="with reason 'closed': the task's outcome")
    decided_at: datetime = Field(description="when the dispatcher decided: the start of the stop's latency")
