"""The sandboxes' injected faults (crash drills), seen by the real clients the services use.

Telegram: a 429 storm (every Bot API method answers 429 with `parameters.retry_after`) and a wave of 403 blocks,
through aiogram over real HTTP. Twilio: bursts of 429 (code 20429) and of 5xx on the REST API, through
`twilio.rest.Client` over `AsyncTwilioHttpClient`. Each test runs its own sandbox on a free port.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from infra.sandbox.app import create_app
from infra.sandbox.telegram import TelegramSandbox
from infra.sandbox.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioSandbox
from tests.conftest import serve

CITIZEN = "+8613800138000"
CALLER_ID = "+8657196110"
HANGUP = "<Response><Hangup/></Response>"


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    async with serve(create_app(telegram=TelegramSandbox(), twilio=TwilioSandbox(time_scale=0.01))) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as control:
            yield base_url, control


@pytest.fixture
async def bot(sandbox: tuple[str, httpx.AsyncClient]) -> AsyncIterator[Bot]:
    bot_id = 5_000_000_000 + secrets.randbelow(10**9)
    bot = Bot(f"{bot_id}:{secrets.token_urlsafe(26)[:35]}",
              session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox[0])))
    try:
        yield bot
    finally:
        await bot.session.close()


@pytest.fixture
async def twilio(sandbox: tuple[str, httpx.AsyncClient]) -> AsyncIterator[Client]:
    client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
    client.api.base_url = sandbox[0]
    try:
        yield client
    finally:
        await client.http_client.close()


async def _post(control: httpx.AsyncClient, path: str, body: dict) -> dict:
    response = await control.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _chat(control: httpx.AsyncClient, phone: str) -> int:
    return (await _post(control, "/sandbox/telegram/chats", {"phone": phone}))["chat_id"]


# --- Telegram ---------------------------------------------------------------------------------------------------


async def test_telegram_storm_answers_every_method_429_with_retry_after_until_it_ends(
        sandbox: tuple[str, httpx.AsyncClient], bot: Bot) -> None:
    """During a storm aiogram gets TelegramRetryAfter (retry_after as set) on every method; afterwards it sends."""
    _, control = sandbox
    chat_id = await _chat(control, CITIZEN)
    state = await _post(control, "/sandbox/telegram/faults", {"storm_s": 0.6, "retry_after_s": 3})
    assert state["retry_after_s"] == 3 and 0 < state["storm_left_s"] <= 0.6
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(chat_id, "请立即停止转账")
    assert refused.value.retry_after == 3
    with pytest.raises(TelegramRetryAfter):
        await bot.get_me()
    with pytest.raises(TelegramRetryAfter):
        await bot.get_updates(timeout=0)
    await asyncio.sleep(0.7)
    sent = await bot.send_message(chat_id, "请立即停止转账")
    assert sent.chat.id == chat_id
    faults = (await control.get("/sandbox/telegram/faults")).json()
    assert faults["storm_429"] == 3 and faults["storm_left_s"] == 0
    messages = (await control.get(f"/sandbox/telegram/chats/{chat_id}/messages")).json()["messages"]
    assert [m["text"] for m in messages] == ["请立即停止转账"]  # nothing refused was stored


async def test_telegram_storm_default_retry_after_is_the_time_left_and_methods_can_be_chosen(
        sandbox: tuple[str, httpx.AsyncClient], bot: Bot) -> None:
    """Without retry_after_s the storm tells the seconds left (rounded up); `methods` limits it to those methods."""
    _, control = sandbox
    chat_id = await _chat(control, CITIZEN)
    await _post(control, "/sandbox/telegram/faults", {"storm_s": 4.5, "methods": ["sendMessage"]})
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(chat_id, "x")
    assert refused.value.retry_after == 5
    assert (await bot.get_me()).is_bot  # not a stormed method
    await _post(control, "/sandbox/telegram/faults", {"storm_s": 0})  # ends it
    assert (await bot.send_message(chat_id, "x")).text == "x"


async def test_telegram_block_wave_makes_sends_to_those_chats_403_and_tells_the_bot(
        sandbox: tuple[str, httpx.AsyncClient], bot: Bot) -> None:
    """A 403 wave blocks the named chats at once: sends there fail Forbidden, others pass; the bot gets kicked updates."""
    _, control = sandbox
    chats = [await _chat(control, f"+861380013800{i}") for i in range(4)]
    await bot.get_me()  # the bot is known to the sandbox, so the wave targets it
    state = await _post(control, "/sandbox/telegram/faults", {"block_chat_ids": chats[:3]})
    assert state["blocked_by_wave"] == 3
    for chat_id in chats[:3]:
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await bot.send_message(chat_id, "x")
    assert (await bot.send_message(chats[3], "x")).chat.id == chats[3]
    updates = await bot.get_updates(timeout=0)
    kicked = [u.my_chat_member.chat.id for u in updates
              if u.my_chat_member is not None and u.my_chat_member.new_chat_member.status == "kicked"]
    assert sorted(kicked) == sorted(chats[:3])
    stats = (await control.get("/sandbox/telegram/stats")).json()
    assert stats["blocked_403"] == 3 and stats["sent"] == 1
    missing = await control.post("/sandbox/telegram/faults", json={"block_chat_ids": [1]})
    assert missing.status_code == 404


# --- Twilio -----------------------------------------------------------------------------------------------------


async def _dial(client: Client, base_url: str):  # noqa: ANN202
    return await client.calls.create_async(to=CITIZEN, from_=CALLER_ID, twiml=HANGUP)


async def test_twilio_429_burst_refuses_every_rest_request_with_20429_until_it_ends(
        sandbox: tuple[str, httpx.AsyncClient], twilio: Client) -> None:
    """A 429 burst: create and fetch raise TwilioRestException 429/20429; after the window a call is created."""
    base_url, control = sandbox
    await _post(control, "/sandbox/twilio/limits", {"calls_per_s": 0})
    first = await _dial(twilio, base_url)
    state = await _post(control, "/sandbox/twilio/faults", {"status": 429, "window_s": 0.6})
    assert state["status"] == 429 and 0 < state["left_s"] <= 0.6
    with pytest.raises(TwilioRestException) as refused:
        await _dial(twilio, base_url)
    assert (refused.value.status, refused.value.code) == (429, 20429)
    with pytest.raises(TwilioRestException) as refused_fetch:
        await twilio.calls(first.sid).fetch_async()
    assert (refused_fetch.value.status, refused_fetch.value.code) == (429, 20429)
    await asyncio.sleep(0.7)
    second = await _dial(twilio, base_url)
    assert second.sid != first.sid
    stats = (await control.get("/sandbox/twilio/stats")).json()
    assert stats["created"] == 2 and stats["rejected_429"] == 0  # the burst is not the calls-per-second limit
    assert (await control.get("/sandbox/twilio/faults")).json()["answered"] == {"429": 2}


@pytest.mark.parametrize("status", [500, 503])
async def test_twilio_5xx_burst_reaches_the_client_and_creates_nothing(
        sandbox: tuple[str, httpx.AsyncClient], twilio: Client, status: int) -> None:
    """A 5xx burst: the twilio client raises TwilioRestException with the status and Twilio's 205xx code."""
    base_url, control = sandbox
    await _post(control, "/sandbox/twilio/faults", {"status": status, "window_s": 30})
    with pytest.raises(TwilioRestException) as refused:
        await _dial(twilio, base_url)
    assert (refused.value.status, refused.value.code) == (status, 20000 + status)
    with pytest.raises(TwilioException, match="Unable to fetch page"):  # the client's own wording for a list
        await twilio.calls.list_async(limit=5)
    await _post(control, "/sandbox/twilio/faults", {"status": status, "window_s": 0})  # ends it
    assert (await _dial(twilio, base_url)).status == "queued"
    stats = (await control.get("/sandbox/twilio/stats")).json()
    assert stats["created"] == 1
    assert (await control.get("/sandbox/twilio/faults")).json()["answered"] == {str(status): 2}


async def test_twilio_bad_credentials_still_401_during_a_burst(
        sandbox: tuple[str, httpx.AsyncClient]) -> None:
    """A burst answers authenticated requests only: a wrong token still gets 401/20003."""
    base_url, control = sandbox
    await _post(control, "/sandbox/twilio/faults", {"status": 503, "window_s": 30})
    client = Client(DEFAULT_ACCOUNT_SID, "wrong", http_client=AsyncTwilioHttpClient())
    client.api.base_url = base_url
    try:
        with pytest.raises(TwilioRestException) as refused:
            await _dial(client, base_url)
    finally:
        await client.http_client.close()
    assert (refused.value.status, refused.value.code) == (401, 20003)
