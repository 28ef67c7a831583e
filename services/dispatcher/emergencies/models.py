"""The payment-stop request (保护性止付) an emergency opens: one per task, with its own lifecycle.

    requested --> sent --> confirmed | failed

`requested` when the loss is reported (in the same transaction as the
emergency), `sent` when the bank liaison has passed it to the bank, then the
bank's answer: `confirmed` (with the amount stopped and the bank's reference)
or `failed`. Either answer closes the task with outcome `loss_reported`
(services/dispatcher/emergencies/service.py). Every move is audited on the
task's timeline; the columns hold the current state, the audit log the history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal, get_args

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

PaymentStopStatus = Literal["requested", "sent", "confirmed", "failed"]
STATUSES: tuple[str, ...] = get_args(PaymentStopStatus)
OPEN_STATUSES = ("requested", "sent")
FINAL_STATUSES = ("confirmed", "failed")
# The only moves allowed: forward, one step at a time (a stop cannot be confirmed before it was sent).
NEXT_STATUSES: dict[str, tuple[str, ...]] = {"requested": ("sent",), "sent": ("confirmed", "failed"),
                                             "confirmed": (), "failed": ()}

# How the loss was reported: a Telegram button, key 3 on the automated call, a seat operator's disposition,
# an officer's visit report, or feedback through the API (POST /v1/tasks/{id}/feedback).
LossVia = Literal["button", "key_3", "disposition", "visit", "feedback"]
LOSS_VIA: tuple[str, ...] = get_args(LossVia)


def cny(amount: Decimal | None) -> Decimal | None:
    """An amount of CNY as stored (fen, two places), so what an answer shows is what the database holds."""
    return None if amount is None else Decimal(amount).quantize(Decimal("0.01"))


class PaymentStop(Base):
    __tablename__ = "payment_stops"

    # One per task: a task becomes an emergency once (tasks.emergency_at), and this is that emergency's stop.
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    case_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(10))
    # Who reported the loss (an audit actor: "citizen:telegram:<chat>", "key:<id>:<name>") and how (LossVia).
    reported_by: Mapped[str] = mapped_column(String(200))
    reported_via: Mapped[str] = mapped_column(String(12))
    requested_at: Mapped[datetime]
    # What the citizen said about the transfer, filled in by an operator or a supervisor as they learn it.
    bank: Mapped[str | None] = mapped_column(String(100))
    account: Mapped[str | None] = mapped_column(String(64))
    amount_lost_cny: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    transferred_at: Mapped[datetime | None]
    # The bank's answer: how much it held back (0 when the stop failed) and its reference for the stop.
    amount_stopped_cny: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    reference: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    sent_by: Mapped[str | None] = mapped_column(String(200))
    finished_at: Mapped[datetime | None]  # confirmed or failed
    finished_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (
        # The open ones are what every console polls for every 2.5 s: a small partial index keeps that cheap.
        Index("ix_payment_stops_open", "requested_at", postgresql_where=text("status IN ('requested', 'sent')")),
    )

    @classmethod
    def requested(cls, *, task_id: uuid.UUID, case_id: uuid.UUID, reported_by: str, reported_via: str,
                  note: str | None, now: datetime) -> PaymentStop:
        """A new request, as an emergency opens it."""
        return cls(task_id=task_id, case_id=case_id, status="requested", reported_by=reported_by[:200],
                   reported_via=reported_via, requested_at=now, note=note, updated_at=now,
                   updated_by=reported_by[:200])

    def take_details(self, details: dict[str, object], *, actor: str, now: datetime) -> dict[str, object]:
        """Fill in what the citizen said (bank, account, amount_lost_cny, transferred_at); returns what changed.

        A field given as None is left as it was: details arrive piecemeal, from several people.
        """
        changed: dict[str, object] = {}
        for name in ("bank", "account", "amount_lost_cny", "transferred_at"):
            value = details.get(name)
            if name == "amount_lost_cny":
                value = cny(value)  # type: ignore[arg-type]
            if value is not None and value != getattr(self, name):
                setattr(self, name, value)
                changed[name] = value
        if changed:
            self.updated_at, self.updated_by = now, actor[:200]
        return changed
