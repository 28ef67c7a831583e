"""Field visits on the wire."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import VisitOutcome
from shared.web import AwareTime, Text

VisitStatus = Literal["open", "claimed", "reported", "cancelled"]


class SubjectOut(BaseModel):
    """The person to meet, as the warnings described them (the latest value of each field)."""

    name: str | None = None
    age: int | None = None
    gender: str | None = None


class TriedOut(BaseModel):
    """One thing already tried or said: an alert, a call, a citizen's answer, a person's step."""

    at: datetime
    kind: Literal["alert", "call", "answer", "event"]
    channel: str | None = Field(default=None, description="bot_alert, auto_call, operator_call, visit")
    attempt: int | None = None
    result: str | None = Field(default=None, description="the channel's result, the citizen's answer, or the audit "
                                                          "action (event)")
    note: str | None = None


class VisitOut(BaseModel):
    visit_id: uuid.UUID
    task_id: uuid.UUID
    case_id: uuid.UUID
    status: VisitStatus
    unit: str = Field(description="the unit whose officers go (a key sees it when its unit is a prefix)")
    region_code: str
    due_at: datetime = Field(description="the task's deadline: report before it")
    minutes_left: int = Field(description="until due_at; negative when overdue")
    tier: Literal["high", "medium", "low"]
    task_status: Literal["open", "in_progress", "closed"]
    emergency: bool = Field(description="money already sent (loss reported)")
    fraud_type: str
    signals: list[str] = Field(description="every warning's signal, oldest first, once each")
    amount_at_risk: Decimal | None = Field(description="the largest amount any warning named (CNY)")
    phone: str = Field(description="E.164, to call the citizen")
    subject: SubjectOut
    requested_by: str
    requested_at: datetime
    note: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    mine: bool = Field(description="claimed by the calling key")
    outcome: VisitOutcome | None
    report_note: str | None
    met_at: datetime | None
    reported_at: datetime | None
    escalated_at: datetime | None
    cancelled_at: datetime | None


class VisitDetail(VisitOut):
    tried: list[TriedOut] = Field(default_factory=list, description="what was already tried, oldest first")


class VisitList(BaseModel):
    items: list[VisitOut]


class VisitRequestIn(BaseModel):
    """An operator or supervisor sends officers now, with what they know."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "她现在在银行柜台"}]})

    note: Text | None = Field(default=None, max_length=500)


class VisitReportIn(BaseModel):
    """What the officer found."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"outcome": "dissuaded", "note": "已上门劝阻，当事人停止转账", "met_at": "2026-11-21T10:50:00+08:00"}]})

    outcome: VisitOutcome
    note: Text | None = Field(default=None, max_length=2000)
    met_at: AwareTime | None = Field(default=None, description="when you met the citizen (default: now); "
                                                                   "not with outcome not_found")


class VisitReportOut(BaseModel):
    visit: VisitOut
    task_action: Literal["closed", "emergency", "details", "escalated", "unchanged"] = Field(
        description="what the report did to the task: closed it, opened the emergency, added to an open "
                    "emergency's details, sent it to a supervisor (not_found), or nothing")
    replayed: bool = Field(description="true: this Idempotency-Key was reported before; nothing new was recorded")
