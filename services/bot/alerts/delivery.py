"""Delivering alerts (`SendAlert` jobs): reserve, send within Telegram's limits, record, report back to the dispatcher.

Never holds a transaction across the network call: (1) a short transaction
checks the task is still open, finds the citizen's chats and reserves one
delivery row per chat (unique per task, attempt and chat, so a job that runs
twice does not send twice); (2) the sends; (3) a short transaction records
what happened and queues the result for the dispatcher.

Telegram has no idempotency key: if the process dies after Telegram accepted
a message and before (3) commits, the rerun sends that message once more.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

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
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from services.bot.alerts import models as m
from services.bot.alerts.service import alert_keyboard, alert_text, handled_text
from shared import contracts
from shared.clock import Clock
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.queue.service import ClaimedJob, enqueue
from shared.queue.worker import PermanentJobError
from shared.sql import sql

log = structlog.get_logger(__name__)

RETRY_AFTER_CAP_S = 60.0


@dataclass
class SendOutcome:
    status: str  # m.SENT, m.BLOCKED, m.FAILED
    message_id: int | None = None
    error: str | None = None


def _wait_for_telegram(retry_state) -> float:  # noqa: ANN001
    """tenacity wait: a 429's retry_after (with up to 10% jitter, capped); otherwise exponential backoff."""
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, TelegramRetryAfter):
        return min(float(exc.retry_after), RETRY_AFTER_CAP_S) * (1 + random.random() * 0.1)
    return min(30.0, 0.5 * 2 ** (retry_state.attempt_number - 1)) * (0.5 + random.random())


class AlertSender:
    def __init__(self, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                 max_tries: int = 6) -> None:
        self.bot = bot
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.max_tries = max_tries

    async def send(self, chat_id: int, text: str, **kwargs: object) -> SendOutcome:
        """One message, within the limits; 429 and network errors retried, a block or bad request is final."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((TelegramRetryAfter, TelegramNetworkError, TelegramServerError)),
                wait=_wait_for_telegram, stop=stop_after_attempt(self.max_tries), reraise=True,
            ):
                with attempt:
                    try:
                        # The session's LimitedSending middleware keeps Telegram's limits and waits out 429s.
                        message = await self.bot.send_message(chat_id, text, **kwargs)  # type: ignore[arg-type]
                    except (TelegramNetworkError, TelegramServerError) as exc:
                        log.warning("bot.send", result="network_error", error=str(exc)[:200], chat_id=chat_id)
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
            log.error("bot.send", result="gave_up", chat_id=chat_id, error=str(exc)[:200])
            return SendOutcome(m.FAILED, error=f"gave up after {self.max_tries} tries: {exc}"[:500])

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
                sql("SELECT chat_id, lang, status FROM bot_deliveries WHERE task_id = :t AND attempt = :a"),
                {"t": task_id, "a": attempt})).all()

        # 2. Send (no transaction open).
        pending = [r for r in rows if r.status == m.SENDING]
        outcomes = await asyncio.gather(*(
            self.send(r.chat_id, alert_text(alert.fraud_type, r.lang),
                      reply_markup=alert_keyboard(task_id, r.lang)) for r in pending))

        # 3. Record, and tell the dispatcher.
        async with transaction(self.sessionmaker) as session:
            for row, outcome in zip(pending, outcomes, strict=True):
                await session.execute(
                    sql("UPDATE bot_deliveries SET status = :s, message_id = :mid, error = :e, sent_at = :sent_at"
                        " WHERE task_id = :t AND attempt = :a AND chat_id = :c"),
                    {"s": outcome.status, "mid": outcome.message_id, "e": outcome.error,
                     "sent_at": self.clock.now() if outcome.status == m.SENT else None,
                     "t": task_id, "a": attempt, "c": row.chat_id})
                if outcome.status == m.BLOCKED:
                    await session.execute(sql("UPDATE chat_bindings SET active = false WHERE chat_id = :c"),
                                          {"c": row.chat_id})
            statuses = {r.status for r in rows if r.status != m.SENDING} | {o.status for o in outcomes}
            if m.SENT in statuses:
                result, detail = "delivered", None
            elif statuses == {m.BLOCKED}:
                result, detail = "blocked", "the citizen blocked the bot"
            else:
                result, detail = "failed", "; ".join(o.error or "" for o in outcomes)[:300] or None
            await self._report(session, task_id, attempt, result, detail)
            task = await dispatcher_contract.task_brief(session, task_id)

        # 4. Closed while we were sending (its stop order may have run before these were recorded):
        #    what just arrived says so at once, rather than offering buttons for a finished task.
        if task is not None and task.closed:
            for row, outcome in zip(pending, outcomes, strict=True):
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
