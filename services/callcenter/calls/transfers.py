"""Key 2: a live officer, now. The citizen stays on the automated call while seats' phones ring.

Design: `<Dial>` with one `<Number>` per seat phone, rung at once; not `<Enqueue>` with a seat dequeuing. Why:
- A thousand of the 1,580 seats are desk phones with no screen (domain.md): nothing on them can dequeue a
  waiting caller. Dequeuing means a call into Twilio that runs `<Dial><Queue>`, started from a console or by
  dialling in to a menu. Ringing the seat's phone works for both kinds of seat: it rings, the officer picks up.
- Twilio rings every `<Number>` of one `<Dial>` at once (up to ten), bridges the first to answer and hangs up
  the others: "the first free officer wins" without routing of our own. With `<Enqueue>` we would rebuild
  that routing (which seat takes which caller), which is what TaskRouter exists for.
- The Dial's `timeout` is the 60 s the issue allows; its `action` receives DialCallStatus, where no answer
  (no-answer, busy, failed, canceled) turns into the call-back message. Each `<Number>`'s
  `statusCallbackEvent="answered completed"` tells us which seat answered, and when its leg ended.
- What `<Enqueue>` would add, hold music and a queue position, matters little for a wait of at most a minute;
  the citizen hears "please stay on the line" and then ringing.

Which seats: available ones with a phone, whose unit is a prefix of the task's unit (the unit it was handed
to, else its region), so a district's seats and those of its city and province, never another unit's; the most
local first, then the longest idle; at most `max_seats` at once (3 by default: enough for one to pick up,
without taking every free seat of a district for one citizen; Twilio allows ten). Seats ringing for a citizen
are reserved: chosen with their rows locked (FOR UPDATE SKIP LOCKED), and a seat ringing for one citizen is not
chosen for another, so no seat is offered two transfers at once. The reservation ends with the ring (answered,
unanswered, the citizen hung up), or at the end of the wait at the latest, so a lost callback cannot hold a seat.

The wait is a loop of rounds within 60 s of the key press: ring the free seats (a <Dial> whose timeout is the
time left); if none is free because they are all talking or ringing for other citizens, hold ("please hold",
a 5 s <Pause>, a <Redirect> back here) and look again; when a round ends unanswered (every seat declined or
was busy) ring seats not yet rung. A citizen whose unit has no seat on duty at all is told at once.

When a seat answers: the transfer is "connected" (the call timer starts), the seat is on a call, and it takes
the task's operator call with `claim_task_job` (worker `seat:<key>`): the dispatcher queued that call with
run_at = live_transfer_until (the end of the wait) so no other seat can claim it meanwhile. If the dispatcher
has not queued it yet, the claim is settled later (`settle_claims`): at the seat's next read of its tasks (API
and console) and before any seat's claim from the queue, so no other seat can take it first.

Nobody picks up within 60 s: the citizen hears, in their language, that an officer will call back within 10
minutes, and the call ends; the operator call, first in the queue, becomes claimable at once.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.callcenter.calls import models as m
from shared import contracts
from shared.contracts import dispatcher as dispatcher_contract
from shared.queue import service as q
from shared.sql import dumps, sql

log = structlog.get_logger(__name__)

RING_S = 60  # the issue: no seat within 60 s of the key press, the citizen is told an officer calls back
HOLD_S = 5  # no seat free: the citizen holds this long before we look again
MIN_DIAL_S = 5  # Twilio's shortest <Dial> timeout: with less time left, the wait is over
MAX_SEATS = 10  # Twilio: at most ten <Number> nouns in one <Dial>
# The seat talks with the citizen, then records a disposition: the claim it takes with the call lasts this long
# (the lease is renewed for wrap-up when the bridge ends).
# The times here are real seconds (a citizen holding on the line, an operator writing up): with a fast clock
# (SHOUHU_TIME_SCALE) `scale` is clock seconds per real second, and what is stored next to `now` is scaled.
CLAIM_LEASE_S = 15 * 60
WRAP_UP_LEASE_S = 10 * 60
# An answered transfer whose operator call never appeared stops being looked for after this (the task closed,
# or another seat took the call): a later call of the same task is not the one this seat answered.
UNCLAIMED_WINDOW_S = 10 * 60
OPERATOR_KINDS = [contracts.OperatorCall.KIND]
FINAL_LEG_STATUSES = m.TWILIO_FINAL
ON_DUTY = ("available", "on_call", "wrap_up")  # seats that are, or soon will be, free to take a citizen


def seat_worker(key_id: str) -> str:
    """The queue worker name of a seat (as seats.service names it): what its claims are held under."""
    return f"seat:{key_id}"


@dataclass(frozen=True, slots=True)
class Step:
    """What the citizen's call does next: ring seats, hold, hear the call-back promise, or say goodbye."""

    kind: Literal["dial", "hold", "call_back", "goodbye"]
    transfer_id: int
    lang: str
    round: int = 0
    seats: tuple[tuple[str, str], ...] = ()  # (key_id, phone) to ring now, most local first
    dial_s: int = 0  # how long they ring: the time left of the wait

    @property
    def waiting(self) -> bool:
        return self.kind in ("dial", "hold")


async def start(session: AsyncSession, attempt: Any, *, now: datetime, max_seats: int, ring_s: int = RING_S,
                scale: float = 1.0) -> Step:
    """Key 2 was pressed: the first round (seats ringing, or holding), or at once the call-back promise."""
    existing = (await session.execute(sql("SELECT id FROM call_transfers WHERE attempt_id = :a"),
                                      {"a": attempt.id})).first()
    if existing is not None:  # the same webhook delivered twice: go on from where the transfer is
        return await _again(session, existing.id, now=now, max_seats=max_seats, scale=scale)
    task = await dispatcher_contract.task_brief(session, attempt.task_id)
    unit = task.unit if task else ""
    transfer_id = (await session.execute(
        sql("INSERT INTO call_transfers (attempt_id, task_id, lang, unit, pressed_at, ring_until, outcome)"
            " VALUES (:a, :t, :lang, :unit, :now, :until, :outcome) RETURNING id"),
        {"a": attempt.id, "t": attempt.task_id, "lang": attempt.lang or "zh", "unit": unit, "now": now,
         "until": now + timedelta(seconds=ring_s * scale), "outcome": m.TRANSFER_RINGING})).scalar_one()
    if task is None or not await on_duty(session, unit=unit):
        await _no_seat_came(session, transfer_id, task_id=attempt.task_id, outcome="no_seat", now=now)
        return Step("call_back", transfer_id, attempt.lang or "zh")
    return await _next_round(session, await _locked(session, transfer_id), now=now, max_seats=max_seats, scale=scale)


async def on_duty(session: AsyncSession, *, unit: str) -> bool:
    """Whether any seat of the unit or above it, with a phone, is signed in (free now, or after its call)."""
    return bool((await session.execute(
        sql("SELECT EXISTS (SELECT 1 FROM seats WHERE state = ANY(:states) AND phone IS NOT NULL"
            " AND starts_with(CAST(:unit AS text), unit))"), {"states": list(ON_DUTY), "unit": unit})).scalar())


async def free_seats(session: AsyncSession, *, unit: str, now: datetime, limit: int,
                     rung: list[str]) -> list[tuple[str, str]]:
    """Available seats with a phone in `unit` or a unit above it, not ringing for another citizen, not already
    rung for this one, not holding a task (处置中: its operator is on another citizen's case, writing or about
    to call); locked until the caller commits."""
    rows = (await session.execute(
        sql("SELECT s.key_id, s.phone FROM seats s"
            # A seat whose wrap-up is over is free, whether or not a read or the sweep has said so yet.
            " WHERE (s.state = 'available' OR (s.state = 'wrap_up' AND s.wrap_up_until <= :now))"
            " AND s.phone IS NOT NULL AND starts_with(CAST(:unit AS text), s.unit)"
            " AND s.key_id <> ALL(CAST(:rung AS text[]))"
            f" AND NOT EXISTS (SELECT 1 FROM call_transfers t WHERE t.outcome = '{m.TRANSFER_RINGING}'"
            "   AND t.ring_until > :now AND s.key_id = ANY(t.ringing_seats))"
            # The seat's claim is a running job locked by it (ix_jobs_locked_by answers this, as the seat board).
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status = 'running' AND j.locked_by = 'seat:' || s.key_id"
            "   AND j.kind = ANY(CAST(:kinds AS text[])))"
            " ORDER BY length(s.unit) DESC, s.updated_at, s.key_id LIMIT :n FOR UPDATE OF s SKIP LOCKED"),
        {"unit": unit, "now": now, "n": limit, "rung": rung, "kinds": OPERATOR_KINDS})).all()
    return [(r.key_id, r.phone) for r in rows]


async def _next_round(session: AsyncSession, transfer: Any, *, now: datetime, max_seats: int,
                      scale: float = 1.0) -> Step:
    """Ring the seats free now for the time left, or hold; once the wait is over, the call-back promise."""
    left_s = int((transfer.ring_until - now).total_seconds() / scale)  # real seconds: Twilio's <Dial> timeout
    if left_s < MIN_DIAL_S:
        await _no_seat_came(session, transfer.id, task_id=transfer.task_id,
                            outcome="no_answer" if transfer.seats else "no_seat", now=now)
        return Step("call_back", transfer.id, transfer.lang)
    seats = await free_seats(session, unit=transfer.unit, now=now, limit=min(max_seats, MAX_SEATS),
                             rung=list(transfer.seats))
    keys = [k for k, _ in seats]
    await session.execute(
        sql("UPDATE call_transfers SET ringing_seats = CAST(:keys AS varchar[]),"
            " seats = seats || CAST(:keys AS varchar[]), rounds = rounds + 1,"
            " legs = legs || CAST(:legs AS jsonb) WHERE id = :id"),
        {"keys": keys, "legs": dumps(dict.fromkeys(keys, "ringing")).decode(), "id": transfer.id})
    log.info("transfer.round", transfer_id=transfer.id, round=transfer.rounds + 1, seats=keys, left_s=left_s)
    if not seats:
        return Step("hold", transfer.id, transfer.lang, round=transfer.rounds + 1)
    return Step("dial", transfer.id, transfer.lang, round=transfer.rounds + 1, seats=tuple(seats), dial_s=left_s)


async def _locked(session: AsyncSession, transfer_id: int) -> Any:
    return (await session.execute(
        sql("SELECT id, attempt_id, task_id, lang, unit, seats, ringing_seats, rounds, ring_until, outcome,"
            " answered_by, leg_sid, claimed_job_id FROM call_transfers WHERE id = :id FOR UPDATE"),
        {"id": transfer_id})).first()


async def _again(session: AsyncSession, transfer_id: int, *, now: datetime, max_seats: int,
                 scale: float = 1.0) -> Step:
    """A round is over (or its webhook came twice): the next step of a transfer in whatever state it is."""
    transfer = await _locked(session, transfer_id)
    if transfer.outcome == m.TRANSFER_RINGING:
        return await _next_round(session, transfer, now=now, max_seats=max_seats, scale=scale)
    if transfer.outcome in ("no_answer", "no_seat"):
        return Step("call_back", transfer.id, transfer.lang)
    return Step("goodbye", transfer.id, transfer.lang)


async def leg_status(session: AsyncSession, *, transfer_id: int, seat: str, form: dict[str, str],
                     now: datetime, scale: float = 1.0) -> str:
    """A seat's leg moved (its <Number> status callback): the first to answer gets the citizen and the task."""
    status, leg_sid = form.get("CallStatus", ""), form.get("CallSid", "")
    transfer = await _locked(session, transfer_id)
    if transfer is None or seat not in transfer.seats:
        return "unknown"
    await session.execute(sql("UPDATE call_transfers SET legs = legs || CAST(:leg AS jsonb) WHERE id = :id"),
                          {"leg": dumps({seat: status[:16]}).decode(), "id": transfer_id})
    if status == "in-progress":
        if transfer.outcome != m.TRANSFER_RINGING or seat not in transfer.ringing_seats:
            return "late"  # another seat was first; Twilio hangs this leg up
        # Connected: the reservation of the round's other seats ends with the ringing.
        await session.execute(
            sql("UPDATE call_transfers SET outcome = :o, answered_by = :k, answered_at = :now, leg_sid = :sid,"
                " ringing_seats = '{}' WHERE id = :id"),
            {"o": m.TRANSFER_CONNECTED, "k": seat, "now": now, "sid": leg_sid[:40], "id": transfer_id})
        await session.execute(sql("UPDATE seats SET state = 'on_call', reason = NULL, wrap_up_until = NULL,"
                                  " updated_at = :now WHERE key_id = :k"), {"now": now, "k": seat})
        claimed = await settle_claims(session, now=now, seat=seat, scale=scale)
        log.info("transfer.connected", transfer_id=transfer_id, seat=seat, claimed=bool(claimed))
        return "connected"
    if status in FINAL_LEG_STATUSES and transfer.outcome == m.TRANSFER_CONNECTED and transfer.leg_sid == leg_sid:
        await _end_connected(session, transfer, now=now, scale=scale)
        return "ended"
    return status


async def dial_ended(session: AsyncSession, *, transfer_id: int, dial_status: str, now: datetime,
                     max_seats: int, scale: float = 1.0) -> Step:
    """A round of ringing is over (the <Dial>'s action): after a conversation, goodbye; unanswered, the next
    round (other seats, or holding) while the wait lasts, then the call-back promise."""
    transfer = await _locked(session, transfer_id)
    if transfer is None:
        return Step("goodbye", transfer_id, "zh")
    if transfer.outcome == m.TRANSFER_CONNECTED:
        await _end_connected(session, transfer, now=now, scale=scale)
        return Step("goodbye", transfer.id, transfer.lang)
    if transfer.outcome == m.TRANSFER_RINGING and dial_status in ("completed", "answered"):
        # Bridged, but the seat's "answered" callback never came: the conversation is over all the same.
        await session.execute(sql("UPDATE call_transfers SET outcome = 'completed', ended_at = :now,"
                                  " ringing_seats = '{}' WHERE id = :id"), {"now": now, "id": transfer.id})
        return Step("goodbye", transfer.id, transfer.lang)
    if transfer.outcome == m.TRANSFER_RINGING:
        await session.execute(sql("UPDATE call_transfers SET ringing_seats = '{}' WHERE id = :id"),
                              {"id": transfer.id})
    return await _again(session, transfer.id, now=now, max_seats=max_seats, scale=scale)


async def hold_ended(session: AsyncSession, *, transfer_id: int, now: datetime, max_seats: int,
                     scale: float = 1.0) -> Step:
    """The citizen held for a while: look for a free seat again."""
    return await _again(session, transfer_id, now=now, max_seats=max_seats, scale=scale)


async def call_ended(session: AsyncSession, *, attempt_id: int, now: datetime, scale: float = 1.0) -> None:
    """The citizen's call ended (its final status): close a transfer still waiting or connected."""
    row = (await session.execute(sql("SELECT id FROM call_transfers WHERE attempt_id = :a"),
                                 {"a": attempt_id})).first()
    if row is None:
        return
    transfer = await _locked(session, row.id)
    if transfer.outcome == m.TRANSFER_RINGING:  # hung up while waiting for a seat
        await _no_seat_came(session, transfer.id, task_id=transfer.task_id, outcome="abandoned", now=now)
    elif transfer.outcome == m.TRANSFER_CONNECTED:
        await _end_connected(session, transfer, now=now, scale=scale)


async def _no_seat_came(session: AsyncSession, transfer_id: int, *, task_id: uuid.UUID, outcome: str,
                        now: datetime) -> None:
    """Nobody answered: the seats are free again, and the operator call waits for no ring any longer."""
    await session.execute(sql("UPDATE call_transfers SET outcome = :o, ended_at = :now, ringing_seats = '{}'"
                              " WHERE id = :id"), {"o": outcome, "now": now, "id": transfer_id})
    # The dispatcher queued it to run when the wait would end; it ended sooner: first in the queue, now.
    await q.update_task_jobs(session, task_id=task_id, kinds=OPERATOR_KINDS, run_by=now)
    log.info("transfer.no_seat", transfer_id=transfer_id, outcome=outcome)


async def _end_connected(session: AsyncSession, transfer: Any, *, now: datetime, scale: float = 1.0) -> None:
    """The seat and the citizen hung up: wrap-up for the seat, with time to record the disposition."""
    await session.execute(sql("UPDATE call_transfers SET outcome = 'completed', ended_at = :now WHERE id = :id"),
                          {"now": now, "id": transfer.id})
    # Wrap-up until the disposition (which starts the wrap-up time), or until the claim kept for it ends.
    await session.execute(sql("UPDATE seats SET state = 'wrap_up', wrap_up_until = :until, updated_at = :now"
                              " WHERE key_id = :k AND state = 'on_call'"),
                          {"now": now, "until": now + timedelta(seconds=WRAP_UP_LEASE_S * scale), "k": transfer.answered_by})
    if transfer.claimed_job_id is not None:
        # Already disposed (the job is gone) or expired: nothing to keep.
        with contextlib.suppress(q.LeaseLost):
            await q.extend_lease(session, job_id=transfer.claimed_job_id, worker=seat_worker(transfer.answered_by),
                                 now=now, lease_s=WRAP_UP_LEASE_S * scale)


# Whether any answered transfer still waits for its operator call (ix_call_transfers_unclaimed answers it): a
# claim's first statement asks this, so settle_claims runs only when there is something to settle.
# :unclaimed_window_s is UNCLAIMED_WINDOW_S on the clock's scale (clock seconds).
UNCLAIMED_WAITING_SQL = ("EXISTS (SELECT 1 FROM call_transfers WHERE answered_by IS NOT NULL AND claimed_job_id IS NULL"
                         " AND answered_at > CAST(:now AS timestamptz) - make_interval(secs => :unclaimed_window_s))")


async def settle_claims(session: AsyncSession, *, now: datetime, seat: str | None = None, scale: float = 1.0) -> int:
    """Give seats that answered a transfer the task's operator call, once the dispatcher has queued it.

    Run before any claim from the queue (so no other seat takes it first) and at a seat's reads of its tasks.
    """
    seat_filter = "AND answered_by = :k" if seat else ""
    waiting = (await session.execute(
        sql("SELECT id, task_id, answered_by FROM call_transfers WHERE answered_by IS NOT NULL"
            f" AND claimed_job_id IS NULL AND answered_at > :since {seat_filter}"
            " ORDER BY answered_at FOR UPDATE SKIP LOCKED"),
        {"since": now - timedelta(seconds=UNCLAIMED_WINDOW_S * scale), "k": seat})).all()
    settled = 0
    for transfer in waiting:
        job = await q.claim_task_job(session, task_id=transfer.task_id, kinds=OPERATOR_KINDS,
                                     worker=seat_worker(transfer.answered_by), now=now, lease_s=CLAIM_LEASE_S * scale)
        if job is not None:
            await session.execute(sql("UPDATE call_transfers SET claimed_job_id = :j, claimed_at = :now WHERE id = :id"),
                                  {"j": job.id, "now": now, "id": transfer.id})
            settled += 1
    return settled


@dataclass(frozen=True, slots=True)
class LiveTransfer:
    """A citizen put through to this seat: when they were bridged (the call timer) and, once over, when it ended."""

    task_id: uuid.UUID
    connected_at: datetime
    ended_at: datetime | None


async def seat_transfers(session: AsyncSession, *, seat: str, since: datetime) -> dict[uuid.UUID, LiveTransfer]:
    """The transfers this seat answered since then, by task (the latest per task)."""
    rows = (await session.execute(
        sql("SELECT DISTINCT ON (task_id) task_id, answered_at, ended_at FROM call_transfers"
            " WHERE answered_by = :k AND answered_at > :since ORDER BY task_id, answered_at DESC"),
        {"k": seat, "since": since})).all()
    return {r.task_id: LiveTransfer(r.task_id, r.answered_at, r.ended_at) for r in rows}
