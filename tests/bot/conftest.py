"""The bot under test: real aiogram over HTTP against the Telegram sandbox, on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.bot import notices
from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from shared.queue.worker import Handler, Worker
from tests.conftest import Sandbox, eventually  # noqa: F401 - re-exported for the bot tests


class BotHarness:
    def __init__(self, app, sandbox: Sandbox, dispatcher) -> None:  # noqa: ANN001
        self.app = app
        self.sandbox = sandbox
        self.dispatcher = dispatcher

    async def deliver_alerts(self) -> int:
        """Run the bot's alert, stop and notice jobs now (the background worker is off in tests)."""
        worker = Worker(self.app.state.sessionmaker, queue="bot", clock=self.dispatcher.clock,
                        handlers={"bot.alert": Handler(self.app.state.sender.deliver, transactional=False),
                                  "bot.stop_alerts": Handler(self.app.state.sender.stop, transactional=False),
                                  notices.KIND: Handler(notices.NoticeSender(self.app.state.sender).deliver,
                                                        transactional=False)})
        return await worker.drain()

    async def bind(self, phone: str = "+8613800138000") -> int:
        """A citizen who started the bot and shared their own number; returns the chat id."""
        chat_id = await self.sandbox.citizen(phone)
        await self.sandbox.say(chat_id, "/start")
        await self.sandbox.share_contact(chat_id, phone)
        await eventually(lambda: self.binding(chat_id))
        return chat_id

    async def binding(self, chat_id: int) -> Any:
        from sqlalchemy import text

        async with self.app.state.sessionmaker() as session:
            return (await session.execute(text("SELECT phone, active, lang FROM chat_bindings WHERE chat_id = :c"),
                                          {"c": chat_id})).first()


@pytest.fixture
async def bot(sandbox: Sandbox, dispatcher, request: pytest.FixtureRequest) -> AsyncIterator[BotHarness]:  # noqa: ANN001
    extra = request.node.get_closest_marker("bot_settings")
    settings = BotSettings(DATABASE_URL=dispatcher.db_url, TELEGRAM_API_BASE=sandbox.base, SHOUHU_BOT_WORKER=False,
                           **(extra.kwargs if extra else {}))
    app = create_bot(settings, clock=dispatcher.clock)
    async with app.router.lifespan_context(app):
        yield BotHarness(app, sandbox, dispatcher)
