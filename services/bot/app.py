"""The bot service: Telegram anti-fraud alerts, acknowledgements, citizen binding and clue reports.

Updates arrive by long polling (default) or at POST /telegram/webhook when
TELEGRAM_WEBHOOK_URL is set (the secret header is checked). Alerts arrive as
"bot.alert" jobs on the "bot" queue and are delivered within Telegram's limits.
Without TELEGRAM_BOT_TOKEN the bot talks to the local sandbox (`shouhu sandbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import BotCommand
from fastapi import FastAPI, HTTPException, Request

from services.bot import notices
from services.bot.alerts.delivery import AlertSender
from services.bot.alerts.limiter import LimitedSending, SendLimiter
from services.bot.campaigns import delivery as campaigns
from services.bot.dialogues.storage import PostgresStorage, sweep
from services.bot.handlers import make_router
from services.bot.settings import BotSettings
from services.bot.webhook import (
    SECURITY_SCHEMES,
    TELEGRAM_SECRET_SCHEME,
    WEBHOOK_BODY,
    WebhookAnswer,
    parse_update,
    secret_matches,
)
from shared import contracts
from shared.auth.service import KeyCache
from shared.clock import Clock
from shared.db import DatabaseUnavailable, database_unavailable, open_database, raw_connect, transaction
from shared.queue.worker import Handler, Worker
from shared.ratelimit.service import SharedLimits
from shared.web import install_common

log = structlog.get_logger(__name__)

COMMANDS = [("start", "绑定手机号 Bind your number"), ("report", "举报线索 Report a clue"),
            ("lang", "中文/English"), ("help", "帮助 Help"), ("stop", "停止接收 Stop messages")]


def make_limiter(settings: BotSettings, url: str) -> SendLimiter:
    """Telegram's limits for this bot, shared with every replica through the database (`url`: the services')."""
    return SendLimiter(SharedLimits(url, lease_s=settings.send_lease_s, application_name="shouhu-bot-limits"),
                       bot_id=settings.bot_id(),
                       global_per_s=settings.global_per_s, per_chat_interval_s=settings.per_chat_interval_s,
                       group_per_min=settings.group_per_min)


def make_bot(settings: BotSettings, limiter: SendLimiter) -> Bot:
    """The aiogram Bot, pointed at Telegram or the sandbox, with every send kept within Telegram's limits."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_base()))
    session.middleware(LimitedSending(limiter))
    return Bot(settings.token(), session=session)


def make_dispatcher(storage: BaseStorage, **context: object) -> Dispatcher:
    # The /report dialogue's state in PostgreSQL (services/bot/dialogues): a restart or another replica continues it.
    dp = Dispatcher(storage=storage)
    dp.include_router(make_router())
    for key, value in context.items():
        dp[key] = value
    return dp


def create_app(settings: BotSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or BotSettings()
    clock = clock or settings.clock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url, engine, sessionmaker = await open_database(settings, application_name="shouhu-bot")
        limiter = make_limiter(settings, url)
        bot = make_bot(settings, limiter)
        dp = make_dispatcher(PostgresStorage(sessionmaker, ttl_s=settings.dialogue_ttl_s),
                             sessionmaker=sessionmaker, clock=clock)
        sender = AlertSender(bot, sessionmaker, clock=clock, limiter=limiter)
        app.state.campaigns = campaigns.CampaignSender(bot, sessionmaker, clock=clock, limiter=limiter)
        app.state.limiter = limiter
        app.state.sessionmaker = sessionmaker
        app.state.key_cache = KeyCache()
        app.state.bot, app.state.dp, app.state.sender = bot, dp, sender
        background: list[asyncio.Task[object]] = []
        workers: list[asyncio.Task[object]] = []
        worker = campaign_worker = None
        if settings.run_worker:
            worker = Worker(sessionmaker, queue="bot", clock=clock, database_url=url,
                            handlers={contracts.SendAlert.KIND: Handler(sender.deliver, transactional=False),
                                      contracts.StopAlerts.KIND: Handler(sender.stop, transactional=False),
                                      notices.KIND: Handler(notices.NoticeSender(sender).deliver,
                                                            transactional=False)},
                            concurrency=settings.worker_concurrency, batch_size=settings.worker_concurrency,
                            poll_interval_s=settings.worker_poll_interval_s, lease_s=settings.worker_lease_s,
                            grace_s=settings.worker_grace_s)
            workers.append(asyncio.create_task(worker.run(), name="bot-alert-worker"))
            # Publicity in a worker of its own, so a round of campaign chunks never delays an alert's claim.
            campaign_worker = campaigns.make_worker(app.state.campaigns, sessionmaker, clock=clock, database_url=url,
                                                    poll_interval_s=settings.worker_poll_interval_s,
                                                    lease_s=settings.worker_lease_s, grace_s=settings.worker_grace_s)
            workers.append(asyncio.create_task(campaign_worker.run(), name="bot-campaign-worker"))
        if settings.telegram_webhook_url:
            # In the background, retried: a replica restarting during a 429 storm must still start and serve
            # (its workers send alerts; another replica's registration of the same URL delivers updates).
            background.append(asyncio.create_task(
                _register_webhook(bot, settings.telegram_webhook_url, settings.telegram_webhook_secret),
                name="bot-set-webhook"))
        elif settings.polling:
            app.state.leader = PollingLeader(bot, dp, url, retry_s=settings.polling_leader_retry_s)
            background.append(asyncio.create_task(app.state.leader.run(), name="bot-polling"))
        background.append(asyncio.create_task(_sweep_dialogues(sessionmaker, ttl_s=settings.dialogue_ttl_s,
                                                               limits=limiter.limits),
                                               name="bot-dialogue-sweep"))
        log.info("bot.started", api_base=settings.api_base(), sandbox=settings.sandbox,
                 mode="webhook" if settings.telegram_webhook_url else ("polling" if settings.polling else "off"))
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if campaign_worker is not None:
                campaign_worker.stop()
            # aiogram waits on its polling tasks with asyncio.wait: cancelling our task would leave them
            # running, so polling is stopped through its own signal first.
            with contextlib.suppress(RuntimeError):  # "Polling is not started"
                await asyncio.wait_for(dp.stop_polling(), timeout=10)
            # The workers finish the alerts they are sending within their grace and give the rest back in
            # place; cancelling them at once would cut an alert mid-send and have another replica resend it.
            if workers:
                await asyncio.wait(workers, timeout=settings.worker_grace_s + 1)
            for task in (*workers, *background):
                task.cancel()
            await asyncio.gather(*workers, *background, return_exceptions=True)
            await bot.session.close()
            await limiter.limits.close()
            await engine.dispose()

    app = FastAPI(title="Shouhu bot", version="0.1.0", lifespan=lifespan,
                  description="Telegram anti-fraud alerts and acknowledgements (守护 bot).")
    install_common(app, service="bot", security_schemes=SECURITY_SCHEMES)

    @app.post("/telegram/webhook", tags=["telegram"], response_model=WebhookAnswer, responses={
        401: {"description": "missing or wrong X-Telegram-Bot-Api-Secret-Token, or webhook mode is off: "
                             "nothing is read or changed"},
        422: {"description": "not a Telegram update: `errors` names the field (Telegram never sends one)"}},
        openapi_extra={"requestBody": WEBHOOK_BODY, "security": [{TELEGRAM_SECRET_SCHEME: []}]})
    async def webhook(request: Request) -> WebhookAnswer:
        """Telegram's webhook: refused (401) without the secret this bot registered; an update of a kind this
        bot does not know is answered 200 and ignored."""
        if not secret_matches(request, settings):
            raise HTTPException(401, "missing or wrong X-Telegram-Bot-Api-Secret-Token")
        bot: Bot = request.app.state.bot
        update = parse_update(await request.body(), bot)
        if update is None:
            return WebhookAnswer(ok=True, handled=False)
        try:
            await request.app.state.dp.feed_update(bot, update)
        except TelegramAPIError as exc:
            # Telegram refused our reply (the chat is gone, the bot was blocked): nothing to retry.
            log.warning("bot.update_failed", update_id=update.update_id, error=f"{type(exc).__name__}: {exc}")
            return WebhookAnswer(ok=True, handled=False)
        except Exception as exc:  # noqa: BLE001
            if database_unavailable(exc):
                # 503 (shared/web.py): Telegram delivers the update again once a connection is free or the
                # database is back, rather than losing it.
                raise DatabaseUnavailable from exc
            # As long polling does (aiogram logs a failed update and goes on): a 5xx here would make Telegram
            # deliver this update again and again, holding back every update after it.
            log.exception("bot.update_failed", update_id=update.update_id)
            return WebhookAnswer(ok=True, handled=False)
        return WebhookAnswer(ok=True, handled=True)

    return app


async def _register_webhook(bot: Bot, url: str, secret: str | None) -> None:
    """setWebhook until Telegram takes it: waits out 429 `retry_after`, retries network and server errors."""
    pause_s = 1.0
    while True:
        try:
            await bot.set_webhook(url, secret_token=secret)
        except TelegramRetryAfter as exc:
            log.warning("bot.set_webhook_rate_limited", retry_after_s=exc.retry_after)
            await asyncio.sleep(exc.retry_after)
        except (TelegramNetworkError, TelegramServerError):
            log.warning("bot.set_webhook_failed", retry_in_s=pause_s, exc_info=True)
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 30.0)
        else:
            log.info("bot.webhook_set", url=url)
            return


class PollingLeader:
    """Long polling by one replica at a time: the holder of a PostgreSQL session-level advisory lock polls.

    Telegram answers 409 Conflict to a second getUpdates on the same token, so replicas that all polled would
    cut each other's long polls. The lock is held on a connection of its own: when the leader stops or dies,
    its connection closes, the lock frees, and another replica takes it within `retry_s`. A leader that loses
    its connection stops polling at its next check (within `retry_s`; until then two may overlap briefly).
    """

    def __init__(self, bot: Bot, dp: Dispatcher, database_url: str, *, retry_s: float) -> None:
        self.bot, self.dp, self.database_url, self.retry_s = bot, dp, database_url, retry_s
        self.leading = False
        self.backend_pid: int | None = None  # the lock connection's server process while leading (tests, logs)

    async def run(self) -> None:
        while True:
            conn = None
            try:
                conn = await raw_connect(self.database_url, server_settings={"application_name": "shouhu-bot-leader"})
                # One lock per bot token's id: two different bots on one database each have their leader.
                while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))",
                                              f"shouhu-bot-polling:{self.bot.id}"):
                    await asyncio.sleep(self.retry_s)
                await self._lead(conn)
                return  # polling ended through dp.stop_polling(): the app is stopping
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be briefly away: try again
                log.warning("bot.polling_leader_lost", exc_info=True)
                await asyncio.sleep(self.retry_s)
            finally:
                self.leading, self.backend_pid = False, None
                if conn is not None:
                    conn.terminate()  # frees the lock at once, without waiting on a dead server

    async def _lead(self, conn) -> None:  # noqa: ANN001 - an asyncpg connection
        self.backend_pid = conn.get_server_pid()
        log.info("bot.polling_leader", bot_id=self.bot.id, backend_pid=self.backend_pid)
        self.leading = True
        polling = asyncio.create_task(_poll(self.bot, self.dp), name="bot-polling-leader")
        try:
            while not polling.done():
                await asyncio.wait({polling}, timeout=self.retry_s)
                if not polling.done():
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self.retry_s)
        finally:
            if not polling.done():
                # aiogram's own stop signal: cancelling the task would leave its polling tasks running.
                with contextlib.suppress(RuntimeError):  # "Polling is not started"
                    await asyncio.wait_for(self.dp.stop_polling(), timeout=10)
                polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)


async def _sweep_dialogues(sessionmaker, *, ttl_s: float, limits: SharedLimits,  # noqa: ANN001
                           every_s: float = 3600.0) -> None:
    """Delete dialogues left unfinished for ttl_s (they already read as finished), and chats' send turns idle
    for an hour (a row per chat ever written to); every replica, hourly."""
    while True:
        try:
            async with transaction(sessionmaker) as session:
                swept = await sweep(session, ttl_s=ttl_s)
            if swept:
                log.info("bot.dialogues_swept", count=swept)
            turns = await limits.sweep_turns(idle_s=3600.0)
            if turns:
                log.info("bot.send_turns_swept", count=turns)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - housekeeping: the next round tries again
            log.warning("bot.dialogue_sweep_failed", exc_info=True)
        await asyncio.sleep(every_s)


async def _poll(bot: Bot, dp: Dispatcher) -> None:
    """Long polling, started again if it ever stops (the sandbox or Telegram may be briefly away)."""
    try:
        await bot.set_my_commands([BotCommand(command=c, description=d) for c, d in COMMANDS])
    except Exception:  # noqa: BLE001 - commands are a nicety; polling matters
        log.warning("bot.set_commands_failed", exc_info=True)
    while True:
        try:
            await dp.start_polling(bot, handle_signals=False, close_bot_session=False)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.warning("bot.polling_stopped", exc_info=True)
            await asyncio.sleep(2)
