"""The whole system in the test's event loop: sandbox, dispatcher, bot and callcenter on real sockets, as `shouhu up`
starts them (their workers, the bot's long polling and the callcenter's calls all running), on one clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from shared.clock import Clock
from tests.conftest import TEST_AUDIT_KEY, listening_socket, serve, url_of


@contextlib.asynccontextmanager
async def running_system(db_url: str, clock: Clock, *, phone_time_scale: float) -> AsyncIterator[dict[str, str]]:
    """Base URLs by name ("sandbox", "dispatcher", "bot", "callcenter"). `phone_time_scale` multiplies the sandbox
    phones' waits (`shouhu sandbox` uses 1 / SHOUHU_TIME_SCALE)."""
    from infra.sandbox.app import create_app as create_sandbox
    from infra.sandbox.twilio import TwilioSandbox
    from services.bot.app import create_app as create_bot
    from services.bot.settings import BotSettings
    from services.callcenter.app import create_app as create_callcenter
    from services.callcenter.settings import CallcenterSettings
    from services.dispatcher.app import create_app as create_dispatcher
    from services.dispatcher.settings import DispatcherSettings

    fast = {"SHOUHU_WORKER_POLL_INTERVAL_S": 0.2}
    async with serve(create_sandbox(twilio=TwilioSandbox(time_scale=phone_time_scale))) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox) as http:
            (await http.post("/sandbox/twilio/limits", json={"calls_per_s": 100})).raise_for_status()
        dispatcher = create_dispatcher(DispatcherSettings(DATABASE_URL=db_url, SHOUHU_KEY_CACHE_TTL_S=0, **fast),
                                       clock=clock)
        bot = create_bot(BotSettings(DATABASE_URL=db_url, TELEGRAM_API_BASE=sandbox, **fast), clock=clock)
        sock = listening_socket()  # the callcenter's public URL (Twilio signs over it) names its own port
        callcenter = create_callcenter(CallcenterSettings(
            DATABASE_URL=db_url, TWILIO_API_BASE=sandbox, CALLCENTER_PUBLIC_URL=url_of(sock), SHOUHU_CALLS_PER_S=50,
            **fast), clock=clock)
        async with serve(dispatcher) as dispatcher_url, serve(bot) as bot_url, \
                serve(callcenter, sock) as callcenter_url:
            yield {"sandbox": sandbox, "dispatcher": dispatcher_url, "bot": bot_url, "callcenter": callcenter_url}


async def make_keys(db_url: str, roles: dict[str, str]) -> dict[str, str]:
    """API keys by role, for the units given ({"officer": "33", "admin": "all"})."""
    from shared.auth.service import create_key
    from shared.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(db_url, pool_size=1, audit_key=TEST_AUDIT_KEY)
    made = {}
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            for role, unit in roles.items():
                _, made[role] = await create_key(session, role=role, unit=unit, name=f"test-{role}")
    finally:
        await engine.dispose()
    return made
