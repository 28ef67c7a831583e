"""Outbound calls: one row per attempt (the idempotency guard), and numbers never to call again."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Attempt states. "dialing" is written before the Twilio request: a rerun that finds
# it without a call sid asks Twilio whether the call exists before it dials (calls/service.py).
# "uncertain" is no longer written; older rows may carry it.
DIALING = "dialing"
PLACED = "placed"
FINAL_STATES = ("completed", "busy", "no-answer", "failed", "canceled", "skipped", "uncertain")
# Twilio's own final CallStatus values (a call, or a <Dial> leg, that has ended).
TWILIO_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


class CallAttempt(Base):
    __tablename__ = "call_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(String(16))  # "auto_call" (automated warning) or "operator_call"
    attempt: Mapped[int] = mapped_column(Integer)
    to_number: Mapped[str] = mapped_column(String(20))
    from_number: Mapped[str] = mapped_column(String(20))
    lang: Mapped[str] = mapped_column(String(5), server_default="zh")
    fraud_type: Mapped[str | None] = mapped_column(String(32))  # from the job: picks the spoken warning
    call_sid: Mapped[str | None] = mapped_column(String(40), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    answered_by: Mapped[str | None] = mapped_column(String(24))
    digits: Mapped[str | None] = mapped_column(String(32))  # every key pressed, in order
    outcome: Mapped[str | None] = mapped_column(String(24))  # what was reported to the dispatcher
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]  # the first "in-progress": the desk's call timer runs from it
    # The dispatcher asked to stop this call (StopCalls): set before Twilio is asked, so the status callback
    # that follows reports "stopped" (never retried) rather than "canceled" (which the playbook retries).
    stop_requested_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("task_id", "channel", "attempt", name="uq_call_attempts_task_channel_attempt"),
        Index("ix_call_attempts_to_created", "to_number", "created_at"),
        # The few attempts not yet final, which reconciliation sweeps (calls/reconcile.py).
        Index("ix_call_attempts_unfinished", "created_at",
              postgresql_where=text("status NOT IN ('" + "', '".join(FINAL_STATES) + "')")),
    )


class DoNotCall(Base):
    """Numbers confirmed wrong (a wrong-number disposition): never dialled again."""

    __tablename__ = "do_not_call"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime]


class CallStop(Base):
    """A StopCalls order as the callcenter received it: kept so that a call being placed at that very moment
    (reserved, no call sid yet) is stopped too, and a PlaceCall job that runs after it places no call."""

    __tablename__ = "call_stops"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID]
    reason: Mapped[str] = mapped_column(String(24))  # contracts.StopReason
    outcome: Mapped[str | None] = mapped_column(String(24))
    except_attempt: Mapped[int | None] = mapped_column(Integer)  # the call the citizen is answering on, left alone
    decided_at: Mapped[datetime]  # the dispatcher's decision: stops calls whose job was due by then
    recorded_at: Mapped[datetime]
    calls_stopped: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        # One row per order: a rerun of the same StopCalls job finds its row (and the task's index).
        UniqueConstraint("task_id", "reason", "decided_at", name="uq_call_stops_task_reason_decided"),
    )


# Live transfer outcomes. "ringing": the seats' phones ring (those seats are reserved for it until
# ring_until); "connected": a seat answered and is bridged to the citizen; then "completed". Without a
# seat: "no_seat" (none was free at the key press), "no_answer" (none picked up in time), "abandoned"
# (the citizen hung up while the seats rang).
TRANSFER_RINGING = "ringing"
TRANSFER_CONNECTED = "connected"
TRANSFER_ENDED = ("completed", "no_seat", "no_answer", "abandoned")


class CallTransfer(Base):
    """Key 2 on an automated call: the seats rung for the citizen, who answered, when, and how it ended."""

    __tablename__ = "call_transfers"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # One transfer per call: a webhook delivered twice finds the first.
    attempt_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("call_attempts.id", ondelete="CASCADE"),
                                            unique=True)
    task_id: Mapped[uuid.UUID]
    lang: Mapped[str] = mapped_column(String(5), server_default="zh")
    unit: Mapped[str] = mapped_column(String(12))  # the task's unit: its seats and those of the units above it
    # Every seat (operator key id) rung so far, most local first; those ringing now (reserved: offered to no
    # other citizen); each leg's last status by seat; how many rounds of ringing or holding there were.
    seats: Mapped[list[str]] = mapped_column(ARRAY(String(16)), server_default="{}")
    ringing_seats: Mapped[list[str]] = mapped_column(ARRAY(String(16)), server_default="{}")
    legs: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    rounds: Mapped[int] = mapped_column(Integer, server_default="0")
    pressed_at: Mapped[datetime]  # key 2: the citizen starts waiting
    # The end of the wait (the key press + 60 s): the seats are reserved until then at the latest (a lost
    # callback cannot hold them longer), and the dispatcher holds its call back until then.
    ring_until: Mapped[datetime]
    answered_by: Mapped[str | None] = mapped_column(String(16))  # the seat that picked up
    answered_at: Mapped[datetime | None]  # the citizen and the seat bridged: the call timer starts
    leg_sid: Mapped[str | None] = mapped_column(String(40))
    claimed_job_id: Mapped[int | None] = mapped_column(BigInteger)  # the operator call the seat took with it
    claimed_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16))
    ended_at: Mapped[datetime | None]

    __table_args__ = (
        # Which seats are ringing now (reserved), among the few transfers that ring at any moment.
        Index("ix_call_transfers_ringing", "ring_until", postgresql_where=text("outcome = 'ringing'")),
        # Answered transfers whose seat has not got the operator call yet (settled at every claim).
        Index("ix_call_transfers_unclaimed", "answered_at",
              postgresql_where=text("answered_by IS NOT NULL AND claimed_job_id IS NULL")),
        # A seat's own transfers (its console shows the live one).
        Index("ix_call_transfers_answered_by", "answered_by", "answered_at"),
    )
