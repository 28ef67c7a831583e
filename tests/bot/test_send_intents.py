"""Send intents for alerts: a crash between a request and its result resends once, never more; a request whose
answer was lost is not retried blindly; one Telegram certainly refused is retried at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from services.bot.alerts.delivery import AlertSender
from services.bot.alerts.limiter import LimitedSending
from services.bot.settings import BotSettings
from shared.db import transaction
from shared.queue import service as q
from shared.queue.worker import RetryLater
from tests.conftest import serve, warning

PHONE = "+8613800138000"


@dataclass
class FakeTelegram:
    """A Telegram that records every sendMessage as it arrives, then answers, fails (502) or never answers."""

    mode: str = "ok"  # ok | hang | fail_once
    arrivals: list[int] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/bot{token}/sendMessage")
        async def send_message(token: str, request: Request) -> JSONResponse:
            form = await request.form()
            chat_id = int(str(form["chat_id"]))
            self.arrivals.append(chat_id)
            if self.mode == "hang":
                await self.release.wait()  # arrived, and no answer comes back
            if self.mode == "fail_once":
                self.mode = "ok"
                return JSONResponse({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status_code=502)
            return JSONResponse({"ok": True, "result": {
                "message_id": len(self.arrivals), "date": 1796300000, "text": str(form.get("text", "")),
                "chat": {"id": chat_id, "type": "private"}}})

        return app


@contextlib.asynccontextmanager
async def sender_to(fake: FakeTelegram, bot, *, timeout_s: float = 60.0) -> AsyncIterator[AlertSender]:  # noqa: ANN001
    """An AlertSender like the app's (same database, limiter and clock), talking to the fake Telegram."""
    async with serve(fake.app()) as base:
        session = AiohttpSession(api=TelegramAPIServer.from_base(base), timeout=timeout_s)
        session.middleware(LimitedSending(bot.app.state.limiter))
        tg = Bot(BotSettings.SANDBOX_TOKEN, session=session)
        try:
            yield AlertSender(tg, bot.app.state.sessionmaker, clock=bot.dispatcher.clock,
                              limiter=bot.app.state.limiter)
        finally:
            fake.release.set()
            await session.close()


async def alert_job(bot) -> q.ClaimedJob:  # noqa: ANN001
    """A warning for the bound citizen, and its bot.alert job claimed as a worker would."""
    await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=PHONE), headers=await bot.dispatcher.headers())
    async with transaction(bot.app.state.sessionmaker) as session:
        jobs = await q.claim(session, queue="bot", worker="test", now=bot.dispatcher.clock.now(), lease_s=600,
                             kinds=["bot.alert"])
    assert len(jobs) == 1
    return jobs[0]


async def delivery(bot, chat_id: int):  # noqa: ANN001, ANN201
    async with bot.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT status, tries, intent_at, message_id FROM bot_deliveries"
                                           " WHERE chat_id = :c"), {"c": chat_id})).one()


async def eventually_arrived(fake: FakeTelegram, n: int) -> None:
    for _ in range(200):
        if len(fake.arrivals) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(fake.arrivals)} requests arrived, expected {n}")


async def test_a_crash_after_the_request_resends_once_and_never_again(bot) -> None:  # noqa: ANN001
    """Killed while Telegram holds the request: the rerun resends it once; later reruns send nothing."""
    chat_id = await bot.bind(PHONE)
    job = await alert_job(bot)
    fake = FakeTelegram(mode="hang")
    async with sender_to(fake, bot) as sender:
        run = asyncio.create_task(sender.deliver(job))
        await eventually_arrived(fake, 1)
        run.cancel()  # the process dies: the request arrived, its result is never recorded
        with contextlib.suppress(asyncio.CancelledError):
            await run
        row = await delivery(bot, chat_id)
        assert (row.status, row.tries) == ("requested", 1) and row.intent_at is not None

        fake.mode = "ok"
        await sender.deliver(job)  # the job's rerun
        row = await delivery(bot, chat_id)
        assert (row.status, row.tries) == ("sent", 2)
        await sender.deliver(job)  # and a rerun of a finished job sends nothing
    assert fake.arrivals == [chat_id, chat_id]  # the one duplicate the crash allows, no more


async def test_a_lost_answer_is_not_retried_in_place_and_the_rerun_resends_once(bot) -> None:  # noqa: ANN001
    """A timeout after the request went: no blind retry; the row keeps its intent, the job's rerun resends once."""
    chat_id = await bot.bind(PHONE)
    job = await alert_job(bot)
    fake = FakeTelegram(mode="hang")
    async with sender_to(fake, bot, timeout_s=1.0) as sender:
        with pytest.raises(RetryLater):
            await sender.deliver(job)
        assert fake.arrivals == [chat_id]  # the timed-out request was not sent again in this run
        row = await delivery(bot, chat_id)
        assert (row.status, row.tries) == ("requested", 1)
        fake.mode = "ok"
        await sender.deliver(job)
        await sender.deliver(job)
    assert fake.arrivals == [chat_id, chat_id]
    row = await delivery(bot, chat_id)
    assert (row.status, row.tries) == ("sent", 2)


async def test_a_request_telegram_certainly_refused_is_retried_in_the_same_run(bot) -> None:  # noqa: ANN001
    """A 502 means Telegram did not take it: sent again at once, recorded as delivered with two intents."""
    chat_id = await bot.bind(PHONE)
    job = await alert_job(bot)
    fake = FakeTelegram(mode="fail_once")
    async with sender_to(fake, bot) as sender:
        await sender.deliver(job)
    assert fake.arrivals == [chat_id, chat_id]
    row = await delivery(bot, chat_id)
    assert (row.status, row.tries) == ("sent", 2)
