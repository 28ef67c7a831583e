"""The bot under test: real aiogram over HTTP against the Telegram sandbox, on a fresh database."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from infra.sandbox.app import create_app as create_sandbox
from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from shared.queue.worker import Handler, Worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """The sandbox's control API: play the citizen."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.AsyncClient(base_url=base, timeout=10)

    async def call(self, method: str, path: str, **json: Any) -> Any:
        resp = await self.http.request(method, f"/sandbox/telegram{path}", json=json or None)
        assert resp.status_code < 400, resp.text
        return resp.json()

    async def citizen(self, phone: str | None = None) -> int:
        return (await self.call("POST", "/chats", phone=phone))["chat_id"]

    async def say(self, chat_id: int, text: str) -> None:
        await self.call("POST", f"/chats/{chat_id}/send", text=text)

    async def share_contact(self, chat_id: int, phone: str, user_id: int | None = None) -> None:
        body: dict[str, Any] = {"phone_number": phone}
        if user_id is not None:
            body["user_id"] = user_id
        await self.call("POST", f"/chats/{chat_id}/contact", **body)

    async def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for m in (await self.call("GET", f"/chats/{chat_id}/messages"))["messages"] if m["from"] == "bot"]

    async def press(self, chat_id: int, message_id: int, data: str) -> str:
        return (await self.call("POST", f"/chats/{chat_id}/press", message_id=message_id, data=data))[
            "callback_query_id"]

    async def callback(self, callback_query_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/callbacks/{callback_query_id}")


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 5.0) -> Any:
    """Poll `check` until it returns something truthy (the bot answers asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value: {value!r})")
        await asyncio.sleep(0.05)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    port = free_port()
    # A short graceful shutdown: the bot's long poll would otherwise hold the server open for its full timeout.
    server = uvicorn.Server(uvicorn.Config(create_sandbox(), host="127.0.0.1", port=port, log_config=None,
                                           lifespan="on", timeout_graceful_shutdown=0.5))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    box = Sandbox(f"http://127.0.0.1:{port}")
    yield box
    await box.http.aclose()
    server.should_exit = True
    await asyncio.wait_for(task, 10)


class BotHarness:
    def __init__(self, app, sandbox: Sandbox, dispatcher) -> None:  # noqa: ANN001
        self.app = app
        self.sandbox = sandbox
        self.dispatcher = dispatcher

    async def deliver_alerts(self) -> int:
        """Run the bot's "bot.alert" jobs now (the background worker is off in tests, for determinism)."""
        worker = Worker(self.app.state.sessionmaker, queue="bot", clock=self.dispatcher.clock,
                        handlers={"bot.alert": Handler(self.app.state.sender.deliver, transactional=False)})
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
