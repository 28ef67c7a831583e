"""The dispatcher's contract: the jobs it consumes, and what it lets the other services read.

The dispatcher owns warnings, cases, tasks, policies, clues and campaigns.
Other services never touch those tables; they send the jobs below, and read
through the functions at the end of this file, whose SQL is the dispatcher's
to keep right when its tables change.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.base import JobPayload
from shared.contracts.contact import ContactRequest
from shared.contracts.vocab import (
    DISPATCHER_QUEUE,
    PRIORITY,
    Channel,
    ChannelResultKind,
    CitizenFeedback,
    Disposition,
)
from shared.queue.service import NewJob
from shared.sql import sql

# ---- jobs the dispatcher consumes ------------------------------------------------------------------------


class TaskTimer(JobPayload):
    """A step of a task's plan is due (a later channel, the visit, the escalation, the deadline)."""

    KIND: ClassVar[str] = "task.timer"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    task_id: uuid.UUID
    plan_seq: int = Field(description="the plan this timer belongs to; a raised tier starts a new plan")
    step: str


class VisitRequest(ContactRequest):
    """Nobody was reached in time: officers or grid workers of the task's district go in person (见面处置)."""

    KIND: ClassVar[str] = "visit.request"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE


class VisitClaimCheck(JobPayload):
    """Has an officer taken this visit yet? Made with the visit; due when the tier's playbook says a visit must
    have been taken (`visit_claim_within_minutes`). One still open then goes to a supervisor, who can send
    officers from elsewhere, instead of waiting unseen until the deadline."""

    KIND: ClassVar[str] = "visit.claim_check"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    task_id: uuid.UUID
    visit_id: uuid.UUID


class LossDetails(BaseModel):
    """What a citizen who already sent money said about the transfer: what the bank needs to stop it."""

    model_config = ConfigDict(extra="ignore")

    bank: str | None = Field(default=None, min_length=1, max_length=100, examples=["中国工商银行"])
    account: str | None = Field(default=None, min_length=1, max_length=64, description="the account the money went to")
    amount_lost: Decimal | None = Field(default=None, ge=0, le=Decimal("1e13"), decimal_places=2,
                                        description="CNY sent, as the citizen says")
    transferred_at: datetime | None = Field(default=None, description="when the money went")

    def columns(self) -> dict[str, Any]:
        """As the payment stop's columns (amounts carry their unit there)."""
        return {"bank": self.bank, "account": self.account, "amount_lost_cny": self.amount_lost,
                "transferred_at": self.transferred_at}


class ChannelResult(JobPayload):
    """What happened on a channel: delivered, answered, failed; a citizen's answer; an operator's disposition."""

    KIND: ClassVar[str] = "task.channel_result"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    task_id: uuid.UUID
    channel: Channel
    attempt: int = Field(description="the channel attempt this result is about (the job's `attempt`)")
    result: ChannelResultKind
    detail: str | None = None
    # A citizen's answer (a button or a key): with result "pressed" or "answered".
    feedback: CitizenFeedback | None = None
    # Who acted, for the audit log ("citizen:telegram:<chat>", "operator:<key>").
    actor: str | None = None
    # A seat operator's disposition: with result "disposition".
    disposition: Disposition | None = None
    note: str | None = None
    callback_at: datetime | None = None
    # With a `loss_reported` disposition: what the citizen told the operator about the transfer.
    loss: LossDetails | None = None
    # Key 2 on an automated call: the citizen stays on the line while the seats' phones ring until
    # then; the operator call that follows is for when none picks up (a seat that does claims it).
    live_transfer_until: datetime | None = None

    def to_job(self, *, now: datetime) -> NewJob:
        """The result as a job; the same result reported twice while the first waits is queued once."""
        answer = self.feedback or self.disposition or ""
        return self.job(run_at=now, task_id=self.task_id, priority=PRIORITY["result"],
                        dedupe_key=f"result:{self.channel}:{self.task_id}:{self.attempt}:{self.result}:{answer}")


class ClueReport(JobPayload):
    """A citizen's clue (平安厅信箱) filed through the bot's /report dialogue; the reference is the bot's."""

    KIND: ClassVar[str] = "clue.report"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    ref: str = Field(min_length=1)
    kind: str = "other"
    value: str = ""
    description: str | None = None
    channel: str = "telegram"
    chat_id: int | None = None
    phone: str | None = None
    reported_at: datetime


class CampaignStart(JobPayload):
    """A publicity campaign's send time has come: choose its recipients and hand them to the bot."""

    KIND: ClassVar[str] = "campaign.start"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    campaign_id: uuid.UUID


class CampaignProgress(JobPayload):
    """The bot finished a chunk of a campaign: the dispatcher checks whether the campaign is done."""

    KIND: ClassVar[str] = "campaign.progress"
    QUEUE: ClassVar[str] = DISPATCHER_QUEUE

    campaign_id: uuid.UUID

    def to_job(self, *, now: datetime) -> NewJob:
        # One waiting check per campaign is enough: it reads the counts as they are when it runs.
        return self.job(run_at=now, priority=PRIORITY["campaign_start"],
                        dedupe_key=f"campaign:progress:{self.campaign_id}")


# ---- what the dispatcher lets others read ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskBrief:
    """A task as the channels need it: is it still open, whose is it, what is it about."""

    id: uuid.UUID
    case_id: uuid.UUID
    status: str
    outcome: str | None
    tier: str
    phone: str
    region_code: str
    assigned_unit: str | None
    fraud_type: str
    due_at: datetime
    emergency_at: datetime | None

    @property
    def closed(self) -> bool:
        return self.status == "closed"

    @property
    def unit(self) -> str:
        """The unit whose people work the task: the one a supervisor handed it to, else its region's."""
        return self.assigned_unit or self.region_code


_BRIEF = ("id, case_id, status, outcome, tier, phone, region_code, assigned_unit, fraud_type, due_at,"
          " emergency_at")


async def task_brief(session: AsyncSession, task_id: uuid.UUID) -> TaskBrief | None:
    """The task's current state, or None when there is no such task."""
    row = (await session.execute(sql(f"SELECT {_BRIEF} FROM tasks WHERE id = :t"), {"t": task_id})).first()
    return TaskBrief(**row._mapping) if row else None


async def task_reasons(session: AsyncSession, task_id: uuid.UUID) -> list[dict[str, Any]]:
    """Why the task has its tier: the reasons of every warning in its case, oldest first."""
    # Through case_id, which is indexed (one task per case); warnings.task_id has no index on purpose (ingest cost).
    rows = (await session.execute(
        sql("SELECT w.reasons FROM tasks t JOIN warnings w ON w.case_id = t.case_id WHERE t.id = :t"
            " ORDER BY w.received_at"), {"t": task_id})).scalars().all()
    return [reason for group in rows for reason in (group or [])]


async def task_brief_with_reasons(session: AsyncSession,
                                  task_id: uuid.UUID) -> tuple[TaskBrief | None, list[dict[str, Any]]]:
    """`task_brief` and `task_reasons` in one round trip (a seat's claim reads both at once)."""
    row = (await session.execute(
        sql(f"SELECT {_BRIEF}, (SELECT COALESCE(jsonb_agg(w.reasons ORDER BY w.received_at), '[]'::jsonb)"
            "  FROM warnings w WHERE w.case_id = tasks.case_id) AS reason_groups"
            " FROM tasks WHERE id = :t"), {"t": task_id})).first()
    if row is None:
        return None, []
    fields = dict(row._mapping)
    groups = fields.pop("reason_groups")
    return TaskBrief(**fields), [reason for group in groups for reason in (group or [])]


@dataclass(frozen=True, slots=True)
class TaskSubject:
    """Who a task is about and what happened, as its warnings say: what a seat reads out (desk phones)."""

    name: str | None
    age: int | None  # as of `today`: from the ID number's birth date, else the age given, aged since
    signals: list[str]  # what happened (the warnings' signal codes), oldest first, each once
    amount_at_risk: Decimal | None  # the largest any warning gave


def _age(subject: dict[str, Any], occurred_at: datetime, today: date) -> int | None:
    id_number = str(subject.get("id_number") or "")
    if len(id_number) == 18 and id_number[:17].isdigit():
        with contextlib.suppress(ValueError):
            birth = date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
            return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    age = subject.get("age")
    if isinstance(age, int) and not isinstance(age, bool):
        then = occurred_at.date()
        return age + today.year - then.year - ((today.month, today.day) < (then.month, then.day))
    return None


async def task_subject(session: AsyncSession, task_id: uuid.UUID, *, today: date) -> TaskSubject:
    """The name and age the latest warning gave (each from the latest that gave it), every signal, the largest
    amount at risk, from the warnings of the task's case."""
    rows = (await session.execute(
        sql("SELECT w.subject, w.signal, w.amount_at_risk, w.occurred_at FROM tasks t"
            " JOIN warnings w ON w.case_id = t.case_id WHERE t.id = :t ORDER BY w.received_at, w.id"),
        {"t": task_id})).all()
    name = age = amount = None
    signals: list[str] = []
    for row in rows:
        subject = row.subject or {}
        name = subject.get("name") or name
        given = _age(subject, row.occurred_at, today)
        age = given if given is not None else age
        if row.signal not in signals:
            signals.append(row.signal)
        if row.amount_at_risk is not None and (amount is None or row.amount_at_risk > amount):
            amount = row.amount_at_risk
    return TaskSubject(name=name, age=age, signals=signals, amount_at_risk=amount)


@dataclass(frozen=True, slots=True)
class CaseSummary:
    id: uuid.UUID
    task_id: uuid.UUID
    created_at: datetime
    status: str
    tier: str
    region_code: str
    outcome: str | None
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class WarningSummary:
    case_id: uuid.UUID
    source: str
    signal: str
    fraud_type: str
    tier: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class SubjectHistory:
    cases: list[CaseSummary]
    warnings: list[WarningSummary]


async def subject_history(session: AsyncSession, *, phone: str, unit: str, limit: int = 50) -> SubjectHistory:
    """A citizen's cases in `unit` (newest first, at most `limit`) and their warnings (oldest first)."""
    cases = [CaseSummary(**r._mapping) for r in (await session.execute(
        sql("SELECT c.id, t.id AS task_id, c.created_at, c.status, c.tier, c.region_code, t.outcome, t.closed_at"
            " FROM cases c JOIN tasks t ON t.case_id = c.id WHERE c.phone = :p AND c.region_code LIKE :unit"
            " ORDER BY c.created_at DESC LIMIT :n"), {"p": phone, "unit": unit + "%", "n": limit})).all()]
    if not cases:
        return SubjectHistory([], [])
    warnings = [WarningSummary(**r._mapping) for r in (await session.execute(
        sql("SELECT case_id, source, signal, fraud_type, tier, occurred_at FROM warnings"
            " WHERE case_id = ANY(CAST(:ids AS uuid[])) ORDER BY occurred_at"), {"ids": [c.id for c in cases]})).all()]
    return SubjectHistory(cases, warnings)


async def campaign_status(session: AsyncSession, campaign_id: uuid.UUID) -> str | None:
    """A campaign's status (scheduled, sending, done, cancelled), or None when there is no such campaign."""
    return (await session.execute(sql("SELECT status FROM campaigns WHERE id = :id"),
                                  {"id": campaign_id})).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class OpenEmergency:
    """A task whose citizen already sent money, while its payment stop (保护性止付) is under way."""

    task_id: uuid.UUID
    tier: str
    region_code: str
    due_at: datetime
    reported_at: datetime
    reported_by: str  # an audit actor: "citizen:telegram:<chat>", "key:<id>:<name>"
    reported_via: str  # button, key_3, disposition, visit, feedback
    payment_stop: str  # requested or sent


async def open_emergencies(session: AsyncSession, unit: str, *, limit: int = 20) -> list[OpenEmergency]:
    """The open emergencies of tasks in `unit` (the citizen's region, or the unit it was handed to), newest first."""
    rows = (await session.execute(
        sql("SELECT t.id AS task_id, t.tier, t.region_code, t.due_at, p.requested_at AS reported_at,"
            " p.reported_by, p.reported_via, p.status AS payment_stop"
            " FROM payment_stops p JOIN tasks t ON t.id = p.task_id"
            " WHERE p.status IN ('requested', 'sent') AND (t.region_code LIKE :unit OR t.assigned_unit LIKE :unit)"
            " ORDER BY p.requested_at DESC LIMIT :limit"), {"unit": unit + "%", "limit": limit})).all()
    return [OpenEmergency(**r._mapping) for r in rows]
