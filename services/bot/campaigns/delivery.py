"""Delivering publicity campaigns ("campaign.send" jobs, one per chunk of recipients) within Telegram's limits.

How it keeps the rules:

- Telegram's limits: every message goes through `bot.send_message`, so through the
  same LimitedSending middleware and SendLimiter as alerts (30/s overall, one
  chat's turn at a time, 429s waited out). Nothing here talks to Telegram directly.
- Alerts never wait behind publicity, three ways:
  1. campaign jobs run in a worker of their own (`make_worker`), which claims only
     "campaign.send"; the alert worker claims only "bot.alert", so a round of slow
     campaign chunks never holds back the claim of an alert;
  2. campaigns hold at most a share (default 2/3) of the limiter's 30 tokens, by a
     semaphore of their own released, like the limiter's, a second after the
     response: at least a third of Telegram's capacity is always free for alerts,
     and an alert waits behind at most that share of campaign requests;
  3. before each chunk, any alert job waiting on the bot queue (a higher priority)
     puts the chunk back for a second (RetryLater, not counted as an error).
- Nobody gets the same campaign twice: a recipient row goes from `queued` to
  `sending` in one conditional UPDATE before its request, so a retried or
  duplicated job, or a second worker, finds it taken and skips it. If the bot dies
  during a request, the row is left `sending`; the job's next run marks it
  `uncertain` and does not resend (the alert sender resends instead, because a
  missed alert costs more than a duplicate; for publicity it is the other way).
  Requests Telegram certainly did not take (a 429, a 5xx, no connection) go back
  to `queued` and are retried.
- Results: sent / failed / blocked / uncertain per row, and the campaign's counters
  in the same transaction; a 403 ("bot was blocked by the user") deactivates the
  binding through the chats service, as /stop does, so no later alert or campaign
  is tried on that chat.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.bot.chats import service as chats
from shared.audit import service as audit
from shared.clock import Clock
from shared.db import transaction
from shared.queue.service import ClaimedJob
from shared.queue.worker import Handler, PermanentJobError, RetryLater, Worker
from shared.sql import sql

log = structlog.get_logger(__name__)

SEND_KIND = "campaign.send"  # queued by the dispatcher (services/dispatcher/campaigns/service.py)
SEND_PRIORITY = 200  # the campaign jobs' priority there; anything below it on the bot queue is an alert
CAMPAIGN_SHARE = 2 / 3  # of the limiter's global rate
STATUS_COLUMN = {"sent": "sent", "failed": "failed", "blocked": "blocked", "uncertain": "uncertain"}


class CampaignPacer:
    """At most `share` campaign requests per second, counted like the limiter (a token back 1 s after the response)."""

    def __init__(self, share: int) -> None:
        self.share = max(1, share)
        self._tokens = asyncio.Semaphore(self.share)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._tokens.acquire()
        try:
            yield
        finally:
            asyncio.get_running_loop().call_later(1.0, self._tokens.release)


@dataclass
class Outcome:
    status: str  # sent, failed, blocked, uncertain; or "queued" (not taken by Telegram: try again later)
    message_id: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


class CampaignSender:
    def __init__(self, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                 global_per_s: float = 30) -> None:
        self.bot = bot
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.pacer = CampaignPacer(int(global_per_s * CAMPAIGN_SHARE))

    async def deliver(self, job: ClaimedJob) -> None:
        """The "campaign.send" job handler: one chunk of recipients."""
        try:
            campaign_id = uuid.UUID(str(job.payload["campaign_id"]))
            chat_ids = [int(c) for c in job.payload["chat_ids"]]
        except (KeyError, ValueError, TypeError):
            raise PermanentJobError("campaign.send needs campaign_id and chat_ids") from None
        now = self.clock.now()
        if await self._alerts_waiting(now):
            raise RetryLater(1.0, "alerts waiting: publicity goes after them")

        async with transaction(self.sessionmaker) as session:
            campaign = (await session.execute(
                sql("SELECT status, texts FROM campaigns WHERE id = :id"), {"id": campaign_id})).first()
            if campaign is None:
                raise PermanentJobError(f"no campaign {campaign_id}")
            if campaign.status == "cancelled":
                log.info("campaign.chunk_skipped", why="cancelled", campaign_id=str(campaign_id))
                return
            # Reserved by an earlier run of this job that never recorded a result: it died mid-request.
            stuck = (await session.execute(
                sql("UPDATE campaign_recipients SET status = 'uncertain', error = :e WHERE campaign_id = :c"
                    " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = 'sending' RETURNING chat_id"),
                {"c": campaign_id, "ids": chat_ids,
                 "e": "the bot stopped during the request; it may have arrived, so it is not resent"})).all()
            await _count(session, campaign_id, "uncertain", len(stuck), now=now)
            # Unbound since the list was made (/stop, or blocked during an alert): not sent, counted as blocked.
            gone = (await session.execute(
                sql("UPDATE campaign_recipients r SET status = 'blocked', error = :e WHERE r.campaign_id = :c"
                    " AND r.chat_id = ANY(CAST(:ids AS bigint[])) AND r.status = 'queued' AND NOT EXISTS"
                    " (SELECT 1 FROM chat_bindings b WHERE b.chat_id = r.chat_id AND b.active) RETURNING chat_id"),
                {"c": campaign_id, "ids": chat_ids,
                 "e": "no longer bound (the citizen stopped or blocked the bot); not sent"})).all()
            await _count(session, campaign_id, "blocked", len(gone), now=now)
            queued = (await session.execute(
                sql("SELECT chat_id FROM campaign_recipients WHERE campaign_id = :c"
                    " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = 'queued' ORDER BY chat_id"),
                {"c": campaign_id, "ids": chat_ids})).scalars().all()

        outcomes = await asyncio.gather(*(self._one(campaign_id, chat_id, campaign.texts) for chat_id in queued))
        back = [o for o in outcomes if o is not None and o.status == "queued"]
        if not back:
            return
        retry_after = [o.retry_after_s for o in back if o.retry_after_s]
        if retry_after:
            raise RetryLater(max(retry_after), f"{len(back)} messages refused with 429; sent later")
        if job.attempts >= job.max_attempts:
            async with transaction(self.sessionmaker) as session:
                given_up = (await session.execute(
                    sql("UPDATE campaign_recipients SET status = 'failed', error = :e WHERE campaign_id = :c"
                        " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = 'queued' RETURNING chat_id"),
                    {"c": campaign_id, "ids": chat_ids,
                     "e": f"gave up after {job.attempts} tries: {back[0].error}"[:500]})).all()
                await _count(session, campaign_id, "failed", len(given_up), now=self.clock.now())
            return
        # An ordinary failure: the worker retries the chunk with backoff, and only the rows still queued go.
        raise RuntimeError(f"{len(back)} of {len(queued)} messages not taken by Telegram: {back[0].error}")

    async def _one(self, campaign_id: uuid.UUID, chat_id: int, texts: dict[str, str]) -> Outcome | None:
        """Reserve, send, record one message; None when another run already took this recipient."""
        async with self.pacer.slot():
            async with transaction(self.sessionmaker) as session:
                lang = (await session.execute(
                    sql("UPDATE campaign_recipients SET status = 'sending' WHERE campaign_id = :c AND chat_id = :chat"
                        " AND status = 'queued' RETURNING lang"), {"c": campaign_id, "chat": chat_id})).scalar()
            if lang is None:
                return None
            outcome = await self._send(chat_id, texts.get(lang) or texts["zh"])
        await self._record(campaign_id, chat_id, outcome)
        return outcome

    async def _send(self, chat_id: int, text: str) -> Outcome:
        try:
            # Plain text (no parse mode): an own text is shown exactly as written, never as markup.
            message = await self.bot.send_message(chat_id, text)
            return Outcome("sent", message.message_id)
        except TelegramForbiddenError as exc:
            return Outcome("blocked", error=str(exc)[:500])
        except (TelegramBadRequest, TelegramNotFound) as exc:
            return Outcome("failed", error=str(exc)[:500])
        except TelegramRetryAfter as exc:  # still 429 after the middleware's own retries
            return Outcome("queued", error=str(exc)[:500], retry_after_s=float(exc.retry_after))
        except (TelegramServerError, TelegramUnauthorizedError) as exc:  # Telegram answered: it did not take it
            return Outcome("queued", error=str(exc)[:500])
        except TelegramNetworkError as exc:
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError):  # never connected: certainly not sent
                return Outcome("queued", error=str(exc)[:500])
            # A timeout or a dropped connection: the request may have arrived. Not resent.
            return Outcome("uncertain", error=f"no answer from Telegram, may have arrived: {exc}"[:500])
        except Exception as exc:  # noqa: BLE001 - after the request: honest about not knowing
            log.exception("campaign.send_error", chat_id=chat_id)
            return Outcome("uncertain", error=f"{type(exc).__name__}: {exc}"[:500])

    async def _record(self, campaign_id: uuid.UUID, chat_id: int, outcome: Outcome) -> None:
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            updated = (await session.execute(
                sql("UPDATE campaign_recipients SET status = :s, error = :e, message_id = :mid, sent_at = :at"
                    " WHERE campaign_id = :c AND chat_id = :chat AND status = 'sending'"),
                {"s": outcome.status, "e": outcome.error, "mid": outcome.message_id,
                 "at": now if outcome.status == "sent" else None, "c": campaign_id, "chat": chat_id})).rowcount
            if not updated:  # a rerun marked it uncertain meanwhile (this run had lost its lease)
                return
            if outcome.status == "blocked":
                await chats.unbind(session, chat_id=chat_id, now=now, why="blocked the bot (403 to a campaign message)")
            if outcome.status in STATUS_COLUMN:
                await _count(session, campaign_id, outcome.status, 1, now=now)
        log.info("campaign.send", result=outcome.status, chat_id=chat_id, campaign_id=str(campaign_id))

    async def _alerts_waiting(self, now: Any) -> bool:
        # ix_jobs_ready (queue, priority, run_at) WHERE status = 'queued' answers this from the index.
        async with self.sessionmaker() as session:
            return bool((await session.execute(
                sql("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = 'bot' AND status = 'queued'"
                    " AND priority < :p AND run_at <= :now)"), {"p": SEND_PRIORITY, "now": now})).scalar())


async def _count(session: AsyncSession, campaign_id: uuid.UUID, status: str, n: int, *, now: Any) -> None:
    """Add `n` final results to the campaign's counters; the update that completes it marks it done (audited)."""
    if not n:
        return
    column = STATUS_COLUMN[status]
    row = (await session.execute(
        sql(f"UPDATE campaigns SET {column} = {column} + :n,"
            " status = CASE WHEN status = 'sending' AND sent + failed + blocked + uncertain + :n >= total"
            "   THEN 'done' ELSE status END,"
            " finished_at = CASE WHEN status = 'sending' AND sent + failed + blocked + uncertain + :n >= total"
            "   THEN CAST(:now AS timestamptz) ELSE finished_at END"
            " WHERE id = :c RETURNING status, region_prefix, total, sent, failed, blocked, uncertain"),
        {"c": campaign_id, "n": n, "now": now})).one()
    if row.status == "done" and row.sent + row.failed + row.blocked + row.uncertain - n < row.total:
        audit.record(session, at=now, actor="system:bot", action="campaign.finished",
                     region_code=row.region_prefix or None, campaign_id=str(campaign_id), total=row.total,
                     sent=row.sent, failed=row.failed, blocked=row.blocked, uncertain=row.uncertain)


def make_worker(sender: CampaignSender, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                database_url: str | None, poll_interval_s: float = 1.0, concurrency: int = 2) -> Worker:
    """The bot's second worker: campaign chunks only, two at a time (the pacer is the real limit)."""
    return Worker(sessionmaker, queue="bot", clock=clock, database_url=database_url,
                  handlers={SEND_KIND: Handler(sender.deliver, transactional=False)},
                  concurrency=concurrency, batch_size=concurrency, poll_interval_s=poll_interval_s, lease_s=300)
