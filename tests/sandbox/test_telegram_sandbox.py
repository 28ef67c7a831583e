"""The Telegram sandbox, driven by the real aiogram client over real HTTP.

Each test starts its own sandbox app with uvicorn on a free 127.0.0.1 port (so tests share nothing and
run in parallel) and talks to it with `aiogram.Bot` over `AiohttpSession`, exactly as the bot service
does, plus plain HTTP to the control API that plays the citizen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.types import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from infra.sandbox.app import create_app
from infra.sandbox.telegram import TelegramSandbox
from tests.conftest import listening_socket, serve

CONTROL = "/sandbox/telegram"


def _token() -> tuple[int, str]:
    bot_id = 5_000_000_000 + secrets.randbelow(10**9)
    return bot_id, f"{bot_id}:{secrets.token_urlsafe(26)[:35]}"


@dataclass
class SandboxHarness:
    base_url: str
    telegram: TelegramSandbox
    control: httpx.AsyncClient
    bots: list[Bot] = field(default_factory=list)

    def bot(self, token: str | None = None) -> Bot:
        """An aiogram Bot pointed at this sandbox (closed when the test ends)."""
        bot = Bot(token or _token()[1], session=AiohttpSession(api=TelegramAPIServer.from_base(self.base_url)))
        self.bots.append(bot)
        return bot

    async def post(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        response = await self.control.post(CONTROL + path, json=body or {}, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.control.get(CONTROL + path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def chat(self, **body: Any) -> int:
        return (await self.post("/chats", body))["chat_id"]


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHarness]:
    telegram = TelegramSandbox(webhook_backoff_s=(0.05, 0.1, 0.2))
    async with serve(create_app(telegram=telegram)) as base_url:
        harness = SandboxHarness(base_url, telegram, httpx.AsyncClient(base_url=base_url, timeout=10))
        try:
            yield harness
        finally:
            for bot in harness.bots:
                await bot.session.close()
            await harness.control.aclose()


@contextlib.asynccontextmanager
async def webhook_receiver(statuses: list[int] | None = None) -> AsyncIterator[tuple[str, asyncio.Queue]]:
    """A tiny HTTP server recording each POST (headers, JSON); answers with `statuses` in turn, then 200."""
    received: asyncio.Queue[tuple[dict[str, str], dict[str, Any], int]] = asyncio.Queue()
    pending = list(statuses or [])

    async def handle(request: web.Request) -> web.Response:
        status = pending.pop(0) if pending else 200
        await received.put((dict(request.headers), await request.json(), status))
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_post("/telegram/webhook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = listening_socket()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/telegram/webhook", received
    finally:
        await runner.cleanup()


def _inline(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in buttons]])


# --- Bot API basics --------------------------------------------------------------------------------------------


async def test_get_me_answers_the_bot_of_the_token(sandbox: SandboxHarness) -> None:
    """getMe answers a User that aiogram parses, with the id taken from the token."""
    bot_id, token = _token()
    me = await sandbox.bot(token).get_me()
    assert me.id == bot_id
    assert me.is_bot is True
    assert me.username and me.username.endswith("bot")


async def test_malformed_token_is_unauthorized_and_unknown_method_not_found(sandbox: SandboxHarness) -> None:
    """A token not of Telegram's shape gets 401 Unauthorized; an unknown method gets 404 Not Found."""
    response = await sandbox.control.post("/bot123:short/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    _, token = _token()
    response = await sandbox.control.post(f"/bot{token}/sendTeleportation")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_json_multipart_and_query_parameters_are_all_accepted(sandbox: SandboxHarness) -> None:
    """Bot API parameters work as a JSON body (objects inline), multipart form, or query string."""
    chat_id = await sandbox.chat()
    await sandbox.post("/limits", {"per_chat_per_s": 0})
    _, token = _token()
    url = f"/bot{token}/sendMessage"
    markup = {"inline_keyboard": [[{"text": "好", "callback_data": "ok"}]]}
    as_json = await sandbox.control.post(url, json={"chat_id": chat_id, "text": "json", "reply_markup": markup})
    as_multipart = await sandbox.control.post(url, files={"chat_id": (None, str(chat_id)), "text": (None, "multipart"),
                                                          "reply_markup": (None, json.dumps(markup))})
    as_query = await sandbox.control.get(url, params={"chat_id": chat_id, "text": "query"})
    for response, text in ((as_json, "json"), (as_multipart, "multipart"), (as_query, "query")):
        assert response.status_code == 200, response.text
        assert response.json()["result"]["text"] == text
    assert as_json.json()["result"]["reply_markup"] == markup
    assert as_multipart.json()["result"]["reply_markup"] == markup


# --- sending and the control API -------------------------------------------------------------------------------


async def test_send_message_with_inline_keyboard_is_visible_through_the_control_api(sandbox: SandboxHarness) -> None:
    """sendMessage to a created chat returns a parsed Message, and the citizen's view shows it with its buttons."""
    chat_id = await sandbox.chat(first_name="王阿姨", phone="+8613800138000")
    bot = sandbox.bot()
    sent = await bot.send_message(chat_id, "请立即停止转账", reply_markup=_inline(("我知道了", "ack:1"), ("不是我", "nm:1")))
    assert sent.chat.id == chat_id and sent.chat.type == "private"
    assert sent.from_user is not None and sent.from_user.id == bot.id
    assert sent.reply_markup is not None and sent.reply_markup.inline_keyboard[0][1].callback_data == "nm:1"
    assert abs(sent.date.timestamp() - time.time()) < 5

    conversation = await sandbox.get(f"/chats/{chat_id}/messages")
    [message] = conversation["messages"]
    assert message["message_id"] == sent.message_id
    assert message["from"] == "bot" and message["text"] == "请立即停止转账" and message["edited"] is False
    assert message["reply_markup"]["inline_keyboard"][0][0] == {"text": "我知道了", "callback_data": "ack:1"}
    assert abs(message["sent_at"] - time.time()) < 5
    chats = (await sandbox.get("/chats"))["chats"]
    assert [(c["chat_id"], c["phone"], c["from_bot"]) for c in chats] == [(chat_id, "+8613800138000", 1)]


async def test_html_parse_mode_is_parsed_and_bad_markup_refused(sandbox: SandboxHarness) -> None:
    """HTML text is stored as Telegram shows it (tags become entities); an unsupported tag is a 400, as in Telegram."""
    chat_id = await sandbox.chat()
    await sandbox.post("/limits", {"per_chat_per_s": 0})
    bot = sandbox.bot()
    sent = await bot.send_message(chat_id, "<b>警告</b> 勿转账 &lt;安全账户&gt;", parse_mode="HTML")
    assert sent.text == "警告 勿转账 <安全账户>"
    assert [(e.type, e.offset, e.length) for e in sent.entities or []] == [("bold", 0, 2)]
    for bad in ("<div>x</div>", "王<阿姨>", "<b>没有结束标签"):  # a stray "<" is the usual unescaped-name bug
        with pytest.raises(TelegramBadRequest, match="can't parse entities"):
            await bot.send_message(chat_id, bad, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(chat_id, "x", reply_markup=_inline(("x", "d" * 65)))


async def test_reply_keyboard_is_kept_on_the_chat_not_the_message(sandbox: SandboxHarness) -> None:
    """A request_contact reply keyboard shows in the chat (for the page) and goes away with ReplyKeyboardRemove."""
    chat_id = await sandbox.chat()
    await sandbox.post("/limits", {"per_chat_per_s": 0})
    bot = sandbox.bot()
    keyboard = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(text="分享手机号", request_contact=True)]],
                                   resize_keyboard=True, one_time_keyboard=True)
    sent = await bot.send_message(chat_id, "请分享手机号以绑定", reply_markup=keyboard)
    assert sent.reply_markup is None  # a Message only ever carries an inline keyboard
    conversation = await sandbox.get(f"/chats/{chat_id}/messages")
    assert conversation["reply_keyboard"]["keyboard"] == [[{"text": "分享手机号", "request_contact": True}]]
    await bot.send_message(chat_id, "已绑定", reply_markup=ReplyKeyboardRemove())
    assert (await sandbox.get(f"/chats/{chat_id}/messages"))["reply_keyboard"] is None


# --- updates ---------------------------------------------------------------------------------------------------


async def test_citizen_message_and_contact_arrive_through_get_updates(sandbox: SandboxHarness) -> None:
    """A citizen's /start with payload and their shared contact reach getUpdates as Updates aiogram parses."""
    chat_id = await sandbox.chat(first_name="李先生", phone="+8613900139000")
    bot = sandbox.bot()
    sent = await sandbox.post(f"/chats/{chat_id}/send", {"text": "/start case-42"})
    await sandbox.post(f"/chats/{chat_id}/contact", {})
    await sandbox.post(f"/chats/{chat_id}/contact", {"phone_number": "13700137000", "user_id": 0,
                                                     "first_name": "儿子"})

    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == sorted(u.update_id for u in updates) and len(updates) == 3
    start, own, other = (u.message for u in updates)
    assert start is not None and own is not None and other is not None
    assert updates[0].update_id == sent["update_id"] and start.message_id == sent["message_id"]
    assert start.text == "/start case-42" and start.chat.id == chat_id
    assert start.from_user is not None and start.from_user.id == chat_id and start.from_user.first_name == "李先生"
    assert [(e.type, e.offset, e.length) for e in start.entities or []] == [("bot_command", 0, 6)]
    assert own.contact is not None and own.contact.phone_number == "+8613900139000"
    assert own.contact.user_id == chat_id
    assert other.contact is not None and other.contact.phone_number == "13700137000"
    assert other.contact.user_id is None and other.contact.first_name == "儿子"

    # Asking with offset = last + 1 confirms them: they are not given again.
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []


async def test_long_poll_returns_as_soon_as_an_update_arrives(sandbox: SandboxHarness) -> None:
    """getUpdates with a timeout waits for the next update and answers at once when it comes."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    await bot.get_updates(timeout=0)  # this bot now receives what citizens send
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done()
    started = time.monotonic()
    await sandbox.post(f"/chats/{chat_id}/send", {"text": "有人让我转账"})
    updates = await asyncio.wait_for(poll, 2)
    assert time.monotonic() - started < 1
    assert [u.message.text for u in updates if u.message] == ["有人让我转账"]


async def test_button_press_becomes_a_callback_query_and_its_answer_is_recorded(sandbox: SandboxHarness) -> None:
    """Pressing an inline button yields a CallbackQuery aiogram parses; answerCallbackQuery is recorded."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    sent = await bot.send_message(chat_id, "您是否正在转账？", reply_markup=_inline(("我知道了", "ack:7"), ("回电", "cb:7")))
    missing = await sandbox.control.post(f"{CONTROL}/chats/{chat_id}/press", json={"message_id": 999, "data": "x"})
    assert missing.status_code == 404
    pressed = await sandbox.post(f"/chats/{chat_id}/press", {"message_id": sent.message_id, "button": "回电"})

    [update] = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert update.update_id == pressed["update_id"] and query is not None
    assert query.id == pressed["callback_query_id"] and query.data == "cb:7"
    assert query.from_user.id == chat_id and query.chat_instance
    assert query.message is not None and query.message.message_id == sent.message_id
    assert query.message.chat.id == chat_id

    before = await sandbox.get(f"/callbacks/{query.id}")
    assert before["answered"] is False
    assert await bot.answer_callback_query(query.id, text="我们会尽快回电", show_alert=True) is True
    after = await sandbox.get(f"/callbacks/{query.id}")
    assert (after["answered"], after["text"], after["show_alert"]) == (True, "我们会尽快回电", True)


async def test_edit_message_text_updates_the_stored_message(sandbox: SandboxHarness) -> None:
    """editMessageText changes what the citizen sees; an edit that changes nothing is Telegram's 400."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    sent = await bot.send_message(chat_id, "您是否正在转账？", reply_markup=_inline(("我知道了", "ack:9")))
    edited = await bot.edit_message_text("已确认：感谢您的反馈", chat_id=chat_id, message_id=sent.message_id)
    assert not isinstance(edited, bool) and edited.text == "已确认：感谢您的反馈" and edited.edit_date
    [message] = (await sandbox.get(f"/chats/{chat_id}/messages"))["messages"]
    assert (message["text"], message["edited"], message["reply_markup"]) == ("已确认：感谢您的反馈", True, None)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("已确认：感谢您的反馈", chat_id=chat_id, message_id=sent.message_id)
    await bot.edit_message_reply_markup(chat_id=chat_id, message_id=sent.message_id, reply_markup=_inline(("好", "ok")))
    [message] = (await sandbox.get(f"/chats/{chat_id}/messages"))["messages"]
    assert message["reply_markup"] == {"inline_keyboard": [[{"text": "好", "callback_data": "ok"}]]}


async def test_waiting_for_the_bots_reply_through_the_control_api(sandbox: SandboxHarness) -> None:
    """GET messages?after=&from=bot&wait= answers as soon as the bot's next message exists (no sleep loops)."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    mine = await sandbox.post(f"/chats/{chat_id}/send", {"text": "/help"})
    waiting = asyncio.create_task(sandbox.get(f"/chats/{chat_id}/messages", after=mine["message_id"], wait=5,
                                              **{"from": "bot"}))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    started = time.monotonic()
    await bot.send_message(chat_id, "帮助：回复 /report 举报")
    answer = await asyncio.wait_for(waiting, 2)
    assert time.monotonic() - started < 1
    assert [m["text"] for m in answer["messages"]] == ["帮助：回复 /report 举报"]


# --- limits and refusals ---------------------------------------------------------------------------------------


async def test_second_message_to_a_chat_within_a_second_is_429(sandbox: SandboxHarness) -> None:
    """Telegram's 1 message/s per chat: the second send is refused with retry_after >= 1 (TelegramRetryAfter)."""
    chat_id = await sandbox.chat()
    other_chat = await sandbox.chat()
    bot = sandbox.bot()
    await bot.send_message(chat_id, "第一条")
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(chat_id, "第二条")
    assert refused.value.retry_after >= 1
    await bot.send_message(other_chat, "另一个对话不受影响")  # the limit is per chat
    stats = await sandbox.get("/stats")
    assert (stats["sent"], stats["rejected_429"], stats["per_chat_violations"]) == (2, 1, 0)
    assert [m["text"] for m in (await sandbox.get(f"/chats/{chat_id}/messages"))["messages"]] == ["第一条"]


async def test_global_limit_per_bot_is_429_and_configurable(sandbox: SandboxHarness) -> None:
    """Over the per-bot limit (set to 5/s here; Telegram's is 30/s) a send is refused with TelegramRetryAfter."""
    assert await sandbox.post("/limits", {"global_per_s": 5}) == {"global_per_s": 5, "per_chat_per_s": 1}
    chats = [await sandbox.chat() for _ in range(6)]
    bot = sandbox.bot()
    for chat_id in chats[:5]:
        await bot.send_message(chat_id, "预警")
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(chats[5], "预警")
    assert refused.value.retry_after >= 1
    await sandbox.bot().send_message(chats[5], "另一个机器人有自己的额度")  # limits are per bot
    stats = await sandbox.get("/stats", bot_id=bot.id)
    assert (stats["sent"], stats["rejected_429"]) == (5, 1)
    assert stats["first_send_at"] <= stats["last_send_at"]


async def test_blocked_chat_is_forbidden_and_not_counted(sandbox: SandboxHarness) -> None:
    """A citizen who blocked the bot: sendMessage raises TelegramForbiddenError and is not counted as sent."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    await bot.get_updates(timeout=0)
    assert (await sandbox.post(f"/chats/{chat_id}/block", {"blocked": True}))["blocked"] is True
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(chat_id, "预警")
    stats = await sandbox.get("/stats")
    assert (stats["sent"], stats["blocked_403"]) == (0, 1)
    [update] = await bot.get_updates(timeout=0)  # Telegram tells the bot it was blocked
    assert update.my_chat_member is not None and update.my_chat_member.new_chat_member.status == "kicked"


async def test_unknown_chat_is_bad_request(sandbox: SandboxHarness) -> None:
    """sendMessage to a chat that does not exist raises TelegramBadRequest 'chat not found'."""
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await sandbox.bot().send_message(123456789, "预警")


# --- webhook ---------------------------------------------------------------------------------------------------


async def test_webhook_delivers_updates_with_the_secret_and_blocks_get_updates(sandbox: SandboxHarness) -> None:
    """With a webhook set, updates are POSTed with the secret header, and getUpdates is 409 until it is deleted."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    async with webhook_receiver() as (url, received):
        assert await bot.set_webhook(url, secret_token="s3cr3t-Token_1") is True
        info = await bot.get_webhook_info()
        assert info.url == url and info.pending_update_count == 0
        sent = await sandbox.post(f"/chats/{chat_id}/send", {"text": "/start"})
        headers, body, _ = await asyncio.wait_for(received.get(), 2)
        assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cr3t-Token_1"
        update = Update.model_validate(body)
        assert update.update_id == sent["update_id"] and update.message and update.message.text == "/start"
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates(timeout=0)
        assert await bot.delete_webhook() is True
    assert await bot.get_updates(timeout=0) == []  # the delivered update is not given again


async def test_failed_webhook_delivery_is_retried_in_order(sandbox: SandboxHarness) -> None:
    """A webhook answering 500 gets the same update again (with backoff) before any later one."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    async with webhook_receiver(statuses=[500, 502]) as (url, received):
        await bot.set_webhook(url)
        first = await sandbox.post(f"/chats/{chat_id}/send", {"text": "一"})
        second = await sandbox.post(f"/chats/{chat_id}/send", {"text": "二"})
        seen = []
        for _ in range(4):
            headers, body, status = await asyncio.wait_for(received.get(), 2)
            assert "X-Telegram-Bot-Api-Secret-Token" not in headers  # no secret was set
            seen.append((body["update_id"], status))
    assert seen == [(first["update_id"], 500), (first["update_id"], 502), (first["update_id"], 200),
                    (second["update_id"], 200)]
    stats = await sandbox.get("/stats")
    assert (stats["webhook_delivered"], stats["webhook_failed_attempts"]) == (2, 2)


async def test_aiogram_webhook_handler_is_verified_and_its_reply_method_is_run(sandbox: SandboxHarness) -> None:
    """aiogram's own webhook handler accepts the sandbox's secret, and a method it answers with is executed."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> Any:
        return message.answer(f"收到：{message.text}")  # not awaited: sent back as the webhook's answer

    app = web.Application()
    SimpleRequestHandler(dispatcher, bot, secret_token="hook-secret", handle_in_background=False).register(
        app, path="/telegram/webhook")
    runner = web.AppRunner(app)
    await runner.setup()
    sock = listening_socket()
    await web.SockSite(runner, sock).start()
    try:
        await bot.set_webhook(f"http://127.0.0.1:{sock.getsockname()[1]}/telegram/webhook",
                              secret_token="hook-secret")
        mine = await sandbox.post(f"/chats/{chat_id}/send", {"text": "你好"})
        reply = await sandbox.get(f"/chats/{chat_id}/messages", after=mine["message_id"], wait=2, **{"from": "bot"})
        assert [m["text"] for m in reply["messages"]] == ["收到：你好"]
    finally:
        await runner.cleanup()


# --- the rest of what the bot calls ----------------------------------------------------------------------------


async def test_commands_chat_action_and_close(sandbox: SandboxHarness) -> None:
    """setMyCommands/getMyCommands/deleteMyCommands round-trip; sendChatAction shows typing; close answers true."""
    chat_id = await sandbox.chat()
    bot = sandbox.bot()
    commands = [BotCommand(command="start", description="开始"), BotCommand(command="stop", description="停止提醒")]
    assert await bot.set_my_commands(commands) is True
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == [("start", "开始"), ("stop", "停止提醒")]
    assert await bot.get_my_commands(language_code="en") == []
    assert await bot.delete_my_commands() is True
    assert await bot.get_my_commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.send_chat_action(chat_id, "typing") is True
    assert (await sandbox.get(f"/chats/{chat_id}/messages"))["typing"] is True
    assert await bot.close() is True


async def test_chat_creation_is_idempotent_and_reset_clears_everything(sandbox: SandboxHarness) -> None:
    """Creating an existing user_id returns it unchanged; fresh ids are made; reset forgets all state."""
    first = await sandbox.post("/chats", {"user_id": 42, "first_name": "张三", "phone": "+8613000000000"})
    again = await sandbox.post("/chats", {"user_id": 42, "first_name": "别名"})
    assert again == first and first["chat_id"] == first["user_id"] == 42
    fresh = await sandbox.post("/chats", {})
    assert fresh["user_id"] >= 700000001 and fresh["first_name"]
    await sandbox.bot().send_message(42, "预警")
    await sandbox.post("/reset")
    assert (await sandbox.get("/chats"))["chats"] == []
    assert (await sandbox.get("/stats"))["sent"] == 0


async def test_page_is_served(sandbox: SandboxHarness) -> None:
    """GET / is the citizen page, and its script and styles are served."""
    page = await sandbox.control.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "守护沙盒" in page.text and "/sandbox/static/sandbox.js" in page.text
    script = await sandbox.control.get("/sandbox/static/sandbox.js")
    assert script.status_code == 200 and "/sandbox/telegram" in script.text
    assert (await sandbox.control.get("/sandbox/static/sandbox.css")).status_code == 200


# --- arrivals, for benchmarks ------------------------------------------------------------------------------------


async def test_with_limits_off_an_excess_is_accepted_and_recorded_in_the_send_log(sandbox: SandboxHarness) -> None:
    """Limits at 0: 40 sends in a second are all accepted, logged in arrival order, and the peak second reads 40."""
    await sandbox.post("/limits", {"global_per_s": 0, "per_chat_per_s": 0})
    phones = [f"+8613700000{i:03d}" for i in range(40)]
    chat_ids = (await sandbox.post("/chats/bulk", {"phones": phones}))["chat_ids"]
    assert len(set(chat_ids)) == 40
    chats = {c["chat_id"]: c["phone"] for c in (await sandbox.get("/chats"))["chats"]}
    assert [chats[c] for c in chat_ids] == phones
    bot = sandbox.bot()
    before = time.time()
    await asyncio.gather(*(bot.send_message(c, "宣传") for c in chat_ids))
    await bot.send_message(chat_ids[0], "同一对话的第二条")  # per chat, too, nothing is refused
    stats = await sandbox.get("/stats", bot_id=bot.id)
    assert (stats["sent"], stats["rejected_429"], stats["per_chat_violations"]) == (41, 0, 1)
    assert stats["max_sent_in_any_second"] >= 40
    sends = (await sandbox.get("/sends", bot_id=bot.id))["sends"]
    assert len(sends) == 41 and sorted(s[1] for s in sends[:40]) == sorted(chat_ids)
    assert [s[0] for s in sends] == sorted(s[0] for s in sends) and sends[0][0] >= before - 0.01
    since = sends[39][0] - 0.0005
    later = (await sandbox.get("/sends", bot_id=bot.id, since=since))["sends"]
    assert later == [s for s in sends if s[0] > since] and later[-1][2] == 2
