"""The callcenter under test: a real server Twilio's sandbox calls back, the real twilio client, a fresh database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.callcenter.app import create_app as create_callcenter
from services.callcenter.settings import CallcenterSettings
from shared.queue.worker import Handler, Worker
from tests.conftest import Sandbox, listening_socket, serve, url_of


class Phone:
    """The Twilio sandbox's control API: script citizens' phones and watch calls."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.http = sandbox.http

    async def call(self, method: str, path: str, **json: Any) -> Any:
        resp = await self.http.request(method, f"/sandbox/twilio{path}", json=json or None)
        assert resp.status_code < 400, resp.text
        return resp.json()

    async def script(self, number: str, behaviour: str = "answer", digits: list[str] | None = None) -> None:
        await self.call("PUT", f"/numbers/{number}", behaviour=behaviour, digits=digits or [], ring_s=0.1)

    async def calls(self, to: str | None = None) -> list[dict[str, Any]]:
        path = "/calls" + (f"?to={to.replace('+', '%2B')}" if to else "")
        return (await self.call("GET", path))["calls"]

    async def ended(self, to: str, timeout_s: float = 10) -> dict[str, Any]:
        """Wait for the last call to `to` to reach a final status."""
        finals = {"completed", "busy", "no-answer", "failed", "canceled"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            calls = await self.calls(to)
            if calls and calls[-1]["status"] in finals:
                # The completed callback may still be on its way: give it a moment to land.
                await asyncio.sleep(0.2)
                return (await self.calls(to))[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no finished call to {to} within {timeout_s} s: {await self.calls(to)}")


class CallcenterHarness:
    def __init__(self, app, phone: Phone, dispatcher, base_url: str) -> None:  # noqa: ANN001
        self.app = app
        self.phone = phone
        self.dispatcher = dispatcher
        self.base_url = base_url

    async def place_calls(self) -> int:
        """Run the callcenter's "call.auto" jobs now (the background worker is off in tests)."""
        worker = Worker(self.app.state.sessionmaker, queue="callcenter", clock=self.dispatcher.clock,
                        handlers={"call.auto": Handler(self.app.state.placer.place, transactional=False)})
        return await worker.drain()

    async def stop_calls(self) -> int:
        """Run the callcenter's "call.stop" jobs now, as its stop worker does."""
        from services.callcenter.calls.stops import make_stop_worker

        worker = make_stop_worker(self.app.state.stopper, self.app.state.sessionmaker, clock=self.dispatcher.clock,
                                  database_url=None)
        return await worker.drain()


@pytest.fixture
async def callcenter(sandbox: Sandbox, dispatcher, request: pytest.FixtureRequest) -> AsyncIterator[CallcenterHarness]:  # noqa: ANN001
    extra = request.node.get_closest_marker("callcenter_settings")
    phone = Phone(sandbox)
    await phone.call("POST", "/settings", time_scale=0.01)
    await phone.call("POST", "/limits", calls_per_s=100)
    sock = listening_socket()  # bound first: the public URL Twilio signs over must name our own port
    base = url_of(sock)
    settings = CallcenterSettings(DATABASE_URL=dispatcher.db_url, TWILIO_API_BASE=sandbox.base,
                                  CALLCENTER_PUBLIC_URL=base, SHOUHU_CALLCENTER_WORKER=False, SHOUHU_CALLS_PER_S=50,
                                  **(extra.kwargs if extra else {}))
    app = create_callcenter(settings, clock=dispatcher.clock)
    async with serve(app, sock):
        yield CallcenterHarness(app, phone, dispatcher, base)
