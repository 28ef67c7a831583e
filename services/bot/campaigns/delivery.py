"""Delivering publicity campaigns (`CampaignChunk` jobs, one per chunk of recipients) within Telegram's limits.

How it keeps the rules:

- Telegram's limits: every message holds a slot of the same SendLimiter as alerts
  (30/s per bot across every replica, one chat's turn at a time; alerts/limiter.py)
  around its reservation and request. Nothing here talks to Telegram directly.
- Alerts never wait behind publicity, three ways:
  1. campaign jobs run in a worker of their own (`make_worker`), which claims only
     campaign chunks; the alert worker claims only alerts, so a round of slow
     campaign chunks never holds back the claim of an alert;
  2. campaigns send in the limiter's campaign lane, which may hold only the first
     2/3 of the bot's 30 tokens (shared by every replica, each given back a second
     after its response): at least a third of Telegram's capacity is always free
     for alerts, and an alert waits behind at most that share of campaign requests;
  3. before each chunk, any alert job waiting on the bot queue (a higher priority)
     puts the chunk back for a second (RetryLater, not counted as an error).
- Nobody gets the same campaign twice: the chunk's chats are inserted into the
  bot's own delivery rows (primary key campaign and chat) and a row goes from `queued` to
  `sending` in one conditional UPDATE before its request, so a retried or
  duplicated job, or a second worker, finds it taken and skips it. If the bot dies
  during a request, the row is left `sending`; the job's next run marks it
  `uncertain` and does not resend (the alert sender resends instead, because a
  missed alert costs more than a duplicate; for publicity it is the other way).
  Requests Telegram certainly did not take (a 429, a 5xx, no connection) go back
  to `queued` and are retried.
- Results: sent / failed / blocked / uncertain per row, and the campaign's counts
  (campaign_delivery_counts) in the same transaction; a 403 ("bot was blocked by
  the user") deactivates the binding through the chats service, as /stop does, so
  no later alert or campaign is tried on that chat. After a chunk the dispatcher
  is told (`CampaignProgress`); it marks the campaign done when every recipient
  has a final status. A campaign the dispatcher cancelled sends no further chunk.
"""

from __future__ import annotations

import asyncio
import uuid
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

from services.bot.alerts.limiter import SendLimiter
from services.bot.campaigns import models as m
from services.bot.chats import service as chats
from shared import contracts
from shared.clock import Clock
from shared.contracts import PRIORITY
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.queue import service as q
from shared.queue.service import ClaimedJob
from shared.queue.worker import Handler, PermanentJobError, RetryLater, Worker
from shared.sql import recordset, sql

log = structlog.get_logger(__name__)

SEND_KIND = contracts.CampaignChunk.KIND
SEND_PRIORITY = PRIORITY["campaign_send"]  # anything more urgent on the bot queue is an alert
STATUS_COLUMN = {"sent": "sent", "failed": "failed", "blocked": "blocked", "uncertain": "uncertain"}


@dataclass
class Outcome:
    status: str  # sent, failed, blocked, uncertain; or "queued" (not taken by Telegram: try again later)
    message_id: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


class CampaignSender:
    def __init__(self, bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                 limiter: SendLimiter) -> None:
        self.bot = bot
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.limiter = limiter

    async def deliver(self, job: ClaimedJob) -> None:
        """The campaign chunk handler: one chunk of recipients."""
        chunk = contracts.CampaignChunk.of(job)
        campaign_id = chunk.campaign_id
        chat_ids = [r.chat_id for r in chunk.recipients]
        now = self.clock.now()
        async with self.sessionmaker() as session:
            if await q.has_ready(session, queue=contracts.BOT_QUEUE, now=now, priority_below=SEND_PRIORITY):
                raise RetryLater(1.0, "alerts waiting: publicity goes after them")

        async with transaction(self.sessionmaker) as session:
            status = await dispatcher_contract.campaign_status(session, campaign_id)
            if status is None:
                raise PermanentJobError(f"no campaign {campaign_id}")
            if status == "cancelled":
                log.info("campaign.chunk_skipped", why="cancelled", campaign_id=str(campaign_id))
                return
            await session.execute(
                sql("INSERT INTO campaign_recipients (campaign_id, chat_id, lang, status)"
                    " SELECT :c, r.chat_id, r.lang, :queued FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
                    " AS r(chat_id bigint, lang text) ON CONFLICT DO NOTHING"),
                {"c": campaign_id, "queued": m.QUEUED, "rows": recordset(r.model_dump() for r in chunk.recipients)})
            await session.execute(sql("INSERT INTO campaign_delivery_counts (campaign_id) VALUES (:c)"
                                      " ON CONFLICT DO NOTHING"), {"c": campaign_id})
            # Reserved by an earlier run of this job that never recorded a result: it died mid-request.
            stuck = (await session.execute(
                sql("UPDATE campaign_recipients SET status = 'uncertain', error = :e WHERE campaign_id = :c"
                    " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = 'sending' RETURNING chat_id"),
                {"c": campaign_id, "ids": chat_ids,
                 "e": "the bot stopped during the request; it may have arrived, so it is not resent"})).all()
            await _count(session, campaign_id, "uncertain", len(stuck))
            # Unbound since the list was made (/stop, or blocked during an alert): not sent, counted as blocked.
            gone = (await session.execute(
                sql("UPDATE campaign_recipients r SET status = 'blocked', error = :e WHERE r.campaign_id = :c"
                    " AND r.chat_id = ANY(CAST(:ids AS bigint[])) AND r.status = 'queued' AND NOT EXISTS"
                    " (SELECT 1 FROM chat_bindings b WHERE b.chat_id = r.chat_id AND b.active) RETURNING chat_id"),
                {"c": campaign_id, "ids": chat_ids,
                 "e": "no longer bound (the citizen stopped or blocked the bot); not sent"})).all()
            await _count(session, campaign_id, "blocked", len(gone))
            queued = (await session.execute(
                sql("SELECT chat_id FROM campaign_recipients WHERE campaign_id = :c"
                    " AND chat_id = ANY(CAST(:ids AS bigint[])) AND status = 'queued' ORDER BY chat_id"),
                {"c": campaign_id, "ids": chat_ids})).scalars().all()
            if stuck or gone or not queued:
                await _progress(session, campaign_id, now=now)

        outcomes = await asyncio.gather(*(self._one(campaign_id, chat_id, chunk.texts) for chat_id in queued))
        if queued:
            async with transaction(self.sessionmaker) as session:
                await _progress(session, campaign_id, now=self.clock.now())
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
                await _count(session, campaign_id, "failed", len(given_up))
                await _progress(session, campaign_id, now=self.clock.now())
            return
        # An ordinary failure: the worker retries the chunk with backoff, and only the rows still queued go.
        raise RuntimeError(f"{len(back)} of {len(queued)} messages not taken by Telegram: {back[0].error}")

    async def _one(self, campaign_id: uuid.UUID, chat_id: int, texts: dict[str, str]) -> Outcome | None:
        """Reserve, send, record one message; None when another run already took this recipient."""
        # The slot first (the campaign lane), then the reservation: a recipient is `sending` only while its
        # request can go at once, not while it waits for a token.
        async with self.limiter.slot(chat_id, lane=self.limiter.campaign):
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
        except TelegramRetryAfter as exc:  # the chat's turn is pushed out for every replica; the chunk comes back
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
                await _count(session, campaign_id, outcome.status, 1)
        log.info("campaign.send", result=outcome.status, chat_id=chat_id, campaign_id=str(campaign_id))


async def _count(session: AsyncSession, campaign_id: uuid.UUID, status: str, n: int) -> None:
    """Add `n` final results to the campaign's counts, in the transaction that gives them their status."""
    if not n:
        return
    column = STATUS_COLUMN[status]
    await session.execute(sql(f"UPDATE campaign_delivery_counts SET {column} = {column} + :n WHERE campaign_id = :c"),
                          {"c": campaign_id, "n": n})


async def _progress(session: AsyncSession, campaign_id: uuid.UUID, *, now: Any) -> None:
    """Tell the dispatcher that results landed; it marks the campaign done when every recipient has one.

    No dedupe key on purpose: a check already running may have read the counts before these committed.
    """
    await q.enqueue(session, [contracts.CampaignProgress(campaign_id=campaign_id).job(
        run_at=now, priority=PRIORITY["campaign_start"])], now=now)


def make_worker(sender: CampaignSender, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                database_url: str | None, poll_interval_s: float = 1.0, concurrency: int = 2, lease_s: float = 10.0,
                grace_s: float = 8.0) -> Worker:
    """The bot's second worker: campaign chunks only, two at a time (the limiter's campaign lane is the real limit)."""
    return Worker(sessionmaker, queue="bot", clock=clock, database_url=database_url,
                  handlers={SEND_KIND: Handler(sender.deliver, transactional=False)},
                  concurrency=concurrency, batch_size=concurrency, poll_interval_s=poll_interval_s, lease_s=lease_s,
                  grace_s=grace_s)
