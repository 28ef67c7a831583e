"""Delivering alerts (`SendAlert` jobs): reserve, send within Telegram's limits, record, report back to the dispatcher.

Never holds a transaction across the network call: (1) a short transaction
checks the task is still open, finds the citizen's chats and reserves one
delivery row per chat (unique per task, attempt and chat, so a job that runs
twice does not send twice); (2) the sends; (3) a short transaction records
what happened and queues the result for the dispatcher.

Send intents. Telegram has no idempotency key, so each request's intent is
committed on its row right before the request goes (status `requested`,
`tries` + 1, `intent_at`), inside the chat's sending slot. What a row then says:
- `sending`: no request has gone out; a rerun sends it.
- `requested` with no result: the request may be on its way or may have
  arrived. A rerun of the job (after a crash, a cancelled run, or a request
  whose answer was lost) resends it once and records a new intent. An alert
  missed costs more than a duplicate, so the guarantee is: **at most one
  duplicate per crash** (or per lost answer), never one without.
- sent / blocked / failed: final.
Errors are sorted by whether the request can have arrived. Certainly not sent
(Telegram answered 429 or 5xx, no connection was made, the body could not be
written): retried in place, with backoff. Maybe sent (a timeout or a cut after
the request went): never retried blindly; the row keeps its intent, the other
chats' results are recorded, and the job comes back in a few seconds
(RetryLater) to resend it once, as after a crash. A row that has had
MAX_INTENTS requests without a result is given up (failed, "may have arrived").
Intents are claimed conditionally (the status and tries the run saw), so a
second run of the same job that overlaps the first skips what the first took.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, retry_if_exception_type, stop_after_attempt

from services.bot.alerts import models as m
from services.bot.alerts.limiter import ALERT, HIGH, SendLimiter
from services.bot.alerts.service import alert_keyboard, alert_text, handled_text
from shared import contracts
from shared.clock import Clock
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.queue.service import ClaimedJob, enqueue
from shared.queue.worker import PermanentJobError, RetryLater
from shared.ratelimit.service import Lane
from shared.sql import sql

log = structlog.get_logger(__name__)

RETRY_AFTER_CAP_S = 60.0
MAYBE_SENT = "maybe"  # an outcome, never a row's status: no answer, the request may have arrived
MAX_INTENTS = 5  # requests per delivery row (crashes and lost answers included) before it is given up
RESEND_AFTER_S = 2.0  # a lost answer: the job comes back this soon to resend once


@dataclass
class SendOutcome:
    status: str  # m.SENT, m.BLOCKED, m.FAILED, or MAYBE_SENT
    message_id: int | None = None
    error: str | None = None
    tries: int = 0  # the row's requests so far, as this run's last intent left it


class IntentTaken(Exception):
    """Another run of the job changed the row since this one read it: that run sends it."""


def certainly_not_sent(exc: BaseException) -> bool:
    """Whether Telegram certainly did not take the request: it answered (429, 5xx), or the request never left.

    A timeout or a connection cut after the request was written is not: it may have arrived.
    """
    if isinstance(exc, TelegramRetryAfter | TelegramServerError):
        return True
    if isinstance(exc, TelegramNetworkError):
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientConnectorError):  # never connected
            return True
        # aiohttp could not write the whole request (a stale keep-alive connection): nothing can act on half a one.
        return isinstance(cause, aiohttp.ClientOSError) and "Can not write request body" in str(cause)
    return False


def _wait_for_telegram(retry_state) -> float:  # noqa: ANN001
    """tenacity wait: a 429's retry_after (with up to 10% jitter, capped); otherwise exponential backoff."""
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, TelegramRetryAfter):
        return min(float(exc.retry_after), RETRY_AFTER_CAP_S) * (1 + random.random() * 0.1)
    return min(30.0, 0.5 * 2 ** (retry_state.attempt_number - 1)) * (0.5 + random.random())


class AlertSender:
    def __init__(self, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                 limiter: SendLimiter, max_tries: int = 6) -> None:
        self.bot = bot
        self.limiter = limiter
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.max_tries = max_tries

    async def send(self, chat_id: int, text: str, *, lane: Lane | None = None,
                   before_request: Callable[[], Awaitable[None]] | None = None, **kwargs: object) -> SendOutcome:
        """One message, within the limits; `before_request` (the intent) runs in the chat's slot before each request.

        Certainly-not-sent errors are retried; a block or bad request is final; a request whose answer was lost
        comes back as MAYBE_SENT, not retried here.
        """
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(certainly_not_sent), wait=_wait_for_telegram,
                stop=stop_after_attempt(self.max_tries), reraise=True,
            ):
                with attempt:
                    async with self.limiter.slot(chat_id, lane):
                        if before_request is not None:
                            await before_request()
                        try:
                            message = await self.bot.send_message(chat_id, text, **kwargs)  # type: ignore[arg-type]
                        except (TelegramNetworkError, TelegramServerError) as exc:
                            log.warning("bot.send", result="network_error", error=str(exc)[:200], chat_id=chat_id,
                                        maybe_sent=not certainly_not_sent(exc))
                            raise
            log.info("bot.send", result="delivered", chat_id=chat_id, message_id=message.message_id)
            return SendOutcome(m.SENT, message.message_id)
        except TelegramForbiddenError as exc:
            log.info("bot.send", result="blocked", chat_id=chat_id)
            return SendOutcome(m.BLOCKED, error=str(exc)[:500])
        except TelegramBadRequest as exc:
            log.warning("bot.send", result="bad_request", chat_id=chat_id, error=str(exc)[:200])
            return SendOutcome(m.FAILED, error=str(exc)[:500])
        except (TelegramRetryAfter, TelegramNetworkError, TelegramServerError) as exc:
            if not certainly_not_sent(exc):
                return SendOutcome(MAYBE_SENT, error=f"no answer from Telegram, may have arrived: {exc}"[:500])
            log.error("bot.send", result="gave_up", chat_id=chat_id, error=str(exc)[:200])
            return SendOutcome(m.FAILED, error=f"gave up after {self.max_tries} tries: {exc}"[:500])

    async def _send_recorded(self, task_id: uuid.UUID, attempt: int, row, text: str, lane: Lane,  # noqa: ANN001
                             **kwargs: object) -> SendOutcome | None:
        """Send to one reserved row, committing the intent before each request; None when another run has it."""
        seen = {"status": row.status, "tries": row.tries}

        async def intent() -> None:
            # One statement in autocommit (committed the moment it returns): no BEGIN/COMMIT round trips per message.
            async with self.sessionmaker.kw["bind"].connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                tries = (await conn.execute(
                    sql("UPDATE bot_deliveries SET status = :requested, tries = tries + 1, intent_at = :now"
                        " WHERE task_id = :t AND attempt = :a AND chat_id = :c AND status = :s AND tries = :n"
                        " RETURNING tries"),
                    {"requested": m.REQUESTED, "now": self.clock.now(), "t": task_id, "a": attempt,
                     "c": row.chat_id, "s": seen["status"], "n": seen["tries"]})).scalar()
            if tries is None:
                raise IntentTaken
            seen.update(status=m.REQUESTED, tries=tries)

        try:
            outcome = await self.send(row.chat_id, text, lane=lane, before_request=intent, **kwargs)
        except IntentTaken:
            log.info("bot.alert.taken_elsewhere", chat_id=row.chat_id)
            return None
        outcome.tries = seen["tries"]
        return outcome

    async def deliver(self, job: ClaimedJob) -> None:
        """The alert job handler."""
        alert = contracts.SendAlert.of(job)
        task_id, attempt = alert.task_id, alert.attempt
        now = self.clock.now()

        # 1. Reserve.
        async with transaction(self.sessionmaker) as session:
            task = await dispatcher_contract.task_brief(session, task_id)
            if task is None:
                raise PermanentJobError(f"no task {task_id}")
            if task.closed:
                log.info("bot.alert.skipped", why="task closed")
                return
            chats = (await session.execute(
                sql("SELECT b.chat_id, COALESCE(c.lang, b.lang) AS lang FROM chat_bindings b"
                    " LEFT JOIN bot_chats c ON c.chat_id = b.chat_id WHERE b.phone = :p AND b.active"),
                {"p": alert.phone})).all()
            if not chats:
                await self._report(session, task_id, attempt, "no_channel", "no bound Telegram chat")
                log.info("bot.alert", result="no_channel")
                return
            for chat in chats:
                await session.execute(
                    sql("INSERT INTO bot_deliveries (task_id, attempt, chat_id, lang, fraud_type, region_code, case_id,"
                        " status, created_at) VALUES (:t, :a, :c, :l, :ft, :rc, :case, :s, :now)"
                        " ON CONFLICT ON CONSTRAINT uq_bot_deliveries_attempt_chat DO NOTHING"),
                    {"t": task_id, "a": attempt, "c": chat.chat_id, "l": chat.lang, "ft": alert.fraud_type,
                     "rc": alert.region_code, "case": alert.case_id, "s": m.SENDING, "now": now})
            rows = (await session.execute(
                sql("SELECT chat_id, lang, status, tries FROM bot_deliveries WHERE task_id = :t AND attempt = :a"),
                {"t": task_id, "a": attempt})).all()
            # Intents without a result (a crash, a cancelled run, a lost answer) had MAX_INTENTS requests: give up.
            worn = [r.chat_id for r in rows if r.status == m.REQUESTED and r.tries >= MAX_INTENTS]
            if worn:
                await session.execute(
                    sql("UPDATE bot_deliveries SET status = :failed, error = :e WHERE task_id = :t AND attempt = :a"
                        " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = :requested"),
                    {"failed": m.FAILED, "requested": m.REQUESTED, "t": task_id, "a": attempt, "ids": worn,
                     "e": f"no answer from Telegram after {MAX_INTENTS} requests; may have arrived"})
                rows = [r._replace(status=m.FAILED) if r.chat_id in worn else r for r in rows]

        # 2. Send (no transaction open), each request's intent committed just before it.
        pending = [r for r in rows if r.status in (m.SENDING, m.REQUESTED)]
        for r in pending:
            if r.status == m.REQUESTED:
                log.warning("bot.alert.resend", chat_id=r.chat_id, tries=r.tries,
                            why="an earlier request has no result (crash or lost answer): resent once")
        lane = HIGH if alert.tier == "high" or alert.emergency else ALERT
        outcomes = await asyncio.gather(*(
            self._send_recorded(task_id, attempt, r, alert_text(alert.fraud_type, r.lang), lane,
                                reply_markup=alert_keyboard(task_id, r.lang)) for r in pending))

        # 3. Record, and tell the dispatcher once every row has a result.
        final = [(r, o) for r, o in zip(pending, outcomes, strict=True)
                 if o is not None and o.status != MAYBE_SENT]
        async with transaction(self.sessionmaker) as session:
            for row, outcome in final:
                await session.execute(
                    sql("UPDATE bot_deliveries SET status = :s, message_id = :mid, error = :e, sent_at = :sent_at"
                        " WHERE task_id = :t AND attempt = :a AND chat_id = :c AND tries = :n"),
                    {"s": outcome.status, "mid": outcome.message_id, "e": outcome.error,
                     "sent_at": self.clock.now() if outcome.status == m.SENT else None,
                     "t": task_id, "a": attempt, "c": row.chat_id, "n": outcome.tries})
                if outcome.status == m.BLOCKED:
                    await session.execute(sql("UPDATE chat_bindings SET active = false WHERE chat_id = :c"),
                                          {"c": row.chat_id})
            now_rows = (await session.execute(
                sql("SELECT status, error FROM bot_deliveries WHERE task_id = :t AND attempt = :a"),
                {"t": task_id, "a": attempt})).all()
            unresolved = sum(1 for r in now_rows if r.status in (m.SENDING, m.REQUESTED))
            if not unresolved:
                statuses = {r.status for r in now_rows}
                if m.SENT in statuses:
                    result, detail = "delivered", None
                elif statuses == {m.BLOCKED}:
                    result, detail = "blocked", "the citizen blocked the bot"
                else:
                    result, detail = "failed", "; ".join(r.error or "" for r in now_rows)[:300] or None
                await self._report(session, task_id, attempt, result, detail)
            task = await dispatcher_contract.task_brief(session, task_id)
        if unresolved:
            # Lost answers: resend them once, as after a crash; rows another run holds are left to it.
            raise RetryLater(RESEND_AFTER_S, f"{unresolved} alert(s) without a result (no answer from Telegram, or"
                                             " another run sending); resent once on the next run")

        # 4. Closed while we were sending (its stop order may have run before these were recorded):
        #    what just arrived says so at once, rather than offering buttons for a finished task.
        if task is not None and task.closed:
            for row, outcome in final:
                if outcome.status == m.SENT and outcome.message_id is not None:
                    await self.edit(row.chat_id, outcome.message_id,
                                    handled_text(alert.fraud_type, row.lang, reason="closed", outcome=task.outcome))

    async def stop(self, job: ClaimedJob) -> None:
        """The StopAlerts handler: the task's alerts still showing buttons say it was handled, without them.

        Editing is idempotent (Telegram answers "message is not modified" to a repeat), so a
        rerun after a crash is harmless. An alert the citizen already answered was edited by
        the press itself and is left alone.
        """
        stop = contracts.StopAlerts.of(job)
        async with self.sessionmaker() as session:
            rows = (await session.execute(
                sql("SELECT chat_id, message_id, lang, COALESCE(fraud_type, 'other') AS fraud_type FROM bot_deliveries"
                    " WHERE task_id = :t AND status = :sent AND message_id IS NOT NULL AND feedback IS NULL"),
                {"t": stop.task_id, "sent": m.SENT})).all()
        for row in rows:
            await self.edit(row.chat_id, row.message_id,
                            handled_text(row.fraud_type, row.lang, reason=stop.reason, outcome=stop.outcome))
        log.info("bot.alerts_stopped", reason=stop.reason, edited=len(rows),
                 lag_ms=round((self.clock.now() - stop.decided_at).total_seconds() * 1000))

    async def edit(self, chat_id: int, message_id: int, text: str) -> bool:
        """Replace an alert's text and remove its buttons; False when Telegram refused (already edited, deleted)."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((TelegramRetryAfter, TelegramNetworkError, TelegramServerError)),
                wait=_wait_for_telegram, stop=stop_after_attempt(self.max_tries), reraise=True,
            ):
                with attempt:
                    await self.bot.edit_message_text(text=text, chat_id=chat_id, message_id=message_id,
                                                     reply_markup=None)
            return True
        except (TelegramBadRequest, TelegramForbiddenError) as exc:  # not modified, not found, blocked: nothing to do
            log.info("bot.edit_skipped", chat_id=chat_id, error=str(exc)[:120])
            return False

    async def _report(self, session: AsyncSession, task_id: uuid.UUID, attempt: int, result: str,
                      detail: str | None) -> None:
        now = self.clock.now()
        await enqueue(session, [alert_result(task_id=task_id, attempt=attempt, result=result, detail=detail)
                                .to_job(now=now)], now=now)


def alert_result(*, task_id: uuid.UUID, attempt: int, result: str, detail: str | None = None,
                 feedback: str | None = None, actor: str | None = None) -> contracts.ChannelResult:
    """What happened to an alert, or the citizen's answer to it, for the dispatcher."""
    return contracts.ChannelResult(task_id=task_id, channel="bot_alert", attempt=attempt, result=result,
                                   detail=detail, feedback=feedback, actor=actor)
