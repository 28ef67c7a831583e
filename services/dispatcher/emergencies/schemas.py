"""Emergencies and their payment stops on the wire."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.dispatcher.emergencies.models import LossVia, PaymentStop, PaymentStopStatus
from shared.web import AwareTime, Text

CNY = dict(ge=0, le=Decimal("1e13"), decimal_places=2)


class PaymentStopOut(BaseModel):
    status: PaymentStopStatus
    reported_by: str = Field(description="who reported the loss (an audit actor)")
    reported_via: LossVia = Field(description="how: a Telegram button, key 3, a disposition, a visit, API feedback")
    requested_at: datetime
    bank: str | None = Field(description="what the citizen said: the bank the money went through")
    account: str | None = Field(description="what the citizen said: the account the money went to")
    amount_lost: Decimal | None = Field(description="what the citizen said: CNY sent")
    transferred_at: datetime | None = Field(description="what the citizen said: when the money went")
    amount_stopped: Decimal | None = Field(description="CNY the bank held back (0 when the stop failed)")
    reference: str | None = Field(description="the bank's reference for the stop")
    note: str | None
    sent_at: datetime | None
    sent_by: str | None
    finished_at: datetime | None = Field(description="when it was confirmed or failed")
    finished_by: str | None
    updated_at: datetime
    updated_by: str


class EmergencyOut(BaseModel):
    task_id: uuid.UUID
    case_id: uuid.UUID
    tier: Literal["high", "medium", "low"]
    task_status: Literal["open", "in_progress", "closed"]
    outcome: str | None
    region: str = Field(description="the citizen's region code")
    assigned_unit: str | None
    fraud_type: str
    due_at: datetime
    breached: bool
    reported_at: datetime = Field(description="when the loss was reported (the emergency began)")
    payment_stop: PaymentStopOut


class EmergencyList(BaseModel):
    items: list[EmergencyOut]


class PaymentStopIn(BaseModel):
    """Move a payment stop on (forward only), and/or fill in what the citizen said about the transfer."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"status": "sent", "note": "已发工行反诈中心"},
        {"status": "confirmed", "amount_stopped": "48000.00", "reference": "ICBC-ZF-20261121-0042"},
        {"status": "failed", "note": "资金已被转出"},
        {"bank": "中国工商银行", "account": "6222 0000 1234 5678", "amount_lost": "50000",
         "transferred_at": "2026-11-21T10:05:00+08:00"}]})

    status: PaymentStopStatus | None = Field(
        default=None, description="the next status: requested → sent → confirmed | failed; omit to add details only")
    amount_stopped: Decimal | None = Field(default=None, description="CNY the bank held back; with confirmed", **CNY)
    reference: Text | None = Field(default=None, min_length=1, max_length=100,
                                   description="the bank's reference; required with confirmed")
    note: Text | None = Field(default=None, max_length=2000)
    bank: Text | None = Field(default=None, min_length=1, max_length=100)
    account: Text | None = Field(default=None, min_length=1, max_length=64)
    amount_lost: Decimal | None = Field(default=None, description="CNY the citizen says they sent", **CNY)
    transferred_at: AwareTime | None = None


def field_errors(body: PaymentStopIn) -> list[dict[str, str]]:
    """What the body's fields say together that no single field can (each error names its field)."""
    errors = []
    if body.status == "confirmed":
        if body.amount_stopped is None:
            errors.append({"field": "amount_stopped", "reason": "required with status confirmed (0 or more, CNY)"})
        if not (body.reference or "").strip():
            errors.append({"field": "reference", "reason": "required with status confirmed: the bank's reference"})
    elif body.amount_stopped is not None and not (body.status == "failed" and body.amount_stopped == 0):
        errors.append({"field": "amount_stopped", "reason": "only with status confirmed (a failed stop held back 0)"})
    if body.status is None and not body.model_fields_set - {"status"}:
        errors.append({"field": "status", "reason": "required unless the body fills in details"})
    return errors


def payment_stop_out(stop: PaymentStop) -> PaymentStopOut:
    return PaymentStopOut(
        status=stop.status, reported_by=stop.reported_by, reported_via=stop.reported_via,  # type: ignore[arg-type]
        requested_at=stop.requested_at, bank=stop.bank, account=stop.account, amount_lost=stop.amount_lost_cny,
        transferred_at=stop.transferred_at, amount_stopped=stop.amount_stopped_cny, reference=stop.reference,
        note=stop.note, sent_at=stop.sent_at, sent_by=stop.sent_by, finished_at=stop.finished_at,
        finished_by=stop.finished_by, updated_at=stop.updated_at, updated_by=stop.updated_by)
