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
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand
from fastapi import FastAPI, HTTPException, Request

from services.bot import notices
from services.bot.alerts.delivery import AlertSender
from services.bot.alerts.limiter import LimitedSending, SendLimiter
from services.bot.campaigns import delivery as campaigns
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
from shared.db import DatabaseUnavailable, database_unavailable, open_database
from shared.queue.worker import Handler, Worker
from shared.web import install_common

log = structlog.get_logger(__name__)

COMMANDS = [("start", "绑定手机号 Bind your number"), ("report", "举报线索 Report a clue"),
            ("lang", "中文/English"), ("help", "帮助 Help"), ("stop", "停止接收 Stop messages")]


def make_bot(settings: BotSettings) -> Bot:
    """The aiogram Bot, pointed at Telegram or the sandbox, with every send kept within Telegram's limits."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_base()))
    session.middleware(LimitedSending(SendLimiter(global_per_s=settings.global_per_s,
                                                  per_chat_interval_s=settings.per_chat_interval_s)))
    return Bot(settings.token(), session=session)


def make_dispatcher(**context: object) -> Dispatcher:
    # MemoryStorage: the /report dialogue lives in this process (a restart asks the citizen to start again).
    dp = Dispatcher(storage=MemoryStorage())
    dp.include_router(make_router())
    for key, value in context.items():
        dp[key] = value
    return dp


def create_app(settings: BotSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or BotSettings()
    clock = clock or Clock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url, engine, sessionmaker = await open_database(settings, application_name="shouhu-bot")
        bot = make_bot(settings)
        dp = make_dispatcher(sessionmaker=sessionmaker, clock=clock)
        sender = AlertSender(bot, sessionmaker, clock=clock)
        app.state.campaigns = campaigns.CampaignSender(bot, sessionmaker, clock=clock,
                                                       global_per_s=settings.global_per_s)
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
            background.append(asyncio.create_task(_poll(bot, dp), name="bot-polling"))
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
