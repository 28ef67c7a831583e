"""The Telegram sandbox: a fake Telegram Bot API that the real aiogram client talks to unchanged.

One in-memory state, two faces:

- the Bot API, `/bot{token}/{method}`, which the bot calls: Telegram's object shapes, error codes and
  wording, long polling, webhook delivery, and Telegram's send limits (30 messages/s per bot,
  1 message/s per chat, https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this);
- the control API, `/sandbox/telegram/...`, which tests, benchmarks and the sandbox page use to play
  citizens: create chats, send text and contacts, press inline buttons, block the bot, read what it sent;
  and to inject faults for crash drills (`/sandbox/telegram/faults`: a 429 storm with `retry_after` on every
  method, a wave of chats blocking the bot at once).

How aiogram 3 encodes a call (aiogram/client/session/aiohttp.py `build_form_data` and base.py
`prepare_value`): a POST whose body is `application/x-www-form-urlencoded` (multipart/form-data only
when a file is attached). Every field is text: nested objects and lists (`reply_markup`, `entities`,
`allowed_updates`, `commands`, `scope`) are JSON strings; booleans are `true`/`false`; numbers are
decimal text; enums are their value; None fields are left out. Telegram also takes query strings and
JSON bodies, and so does the sandbox, so `Params` coerces whichever it gets.

The server is one asyncio process: all state lives in one `TelegramSandbox`, mutated only between
awaits, so no locks are needed. Waiters (long polls, webhook delivery, `?wait=` on the control API)
sleep on a per-bot event that every change replaces.

Each bot id keeps its own state (updates, conversations, webhook, commands, counters). Citizens are
shared: a chat created through the control API can be written to by any bot. Control routes act on
the bot named by `?bot_id=`, or else the bot that most recently called the Bot API, or else the
default sandbox bot (`DEFAULT_TOKEN`); what citizens send before any bot has connected is adopted by
the first bot that does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from infra.sandbox.signal import ChangeSignal

log = structlog.get_logger(__name__)

# A token of the real shape (bot id, colon, 35 URL-safe characters) for the local bot when no real one is set.
DEFAULT_BOT_ID = 1000000001
DEFAULT_TOKEN = f"{DEFAULT_BOT_ID}:SHOUHUsandboxTOKENforLOCALuse0000000"  # as services/bot/settings.py
TOKEN_RE = re.compile(r"^(\d{1,20}):[A-Za-z0-9_-]{30,50}$")
FIRST_USER_ID = 700000001
FIRST_UPDATE_ID = 100000001

# Telegram's limits (https://core.telegram.org/bots/faq, https://core.telegram.org/bots/api#sendmessage).
DEFAULT_GLOBAL_PER_S = 30
DEFAULT_PER_CHAT_PER_S = 1
MAX_TEXT_UTF16 = 4096
MAX_CALLBACK_DATA_BYTES = 64
# Webhook delivery: one attempt, then a retry after each of these pauses; then the update is dropped.
WEBHOOK_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
WEBHOOK_TIMEOUT_S = 10.0
# Accepted sends remembered per bot for GET /sandbox/telegram/sends (an hour at 30/s and more; older ones go).
MAX_SEND_LOG = 200_000
MAX_BULK_CHATS = 200_000

# Update types Telegram sends when `allowed_updates` is empty or was never given.
DEFAULT_UPDATE_TYPES = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages", "inline_query",
    "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media",
    "poll", "poll_answer", "my_chat_member", "chat_join_request", "chat_boost", "removed_chat_boost",
})
CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice", "upload_document",
    "choose_sticker", "find_location", "record_video_note", "upload_video_note",
})
INLINE_BUTTON_ACTIONS = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                         "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
                         "callback_game", "pay")
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
GET_UPDATES_WHILE_WEBHOOK = ("Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
                             "delete the webhook first")
GET_UPDATES_TERMINATED = ("Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                          "is running")
CALLBACK_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"


class TelegramError(Exception):
    """A Bot API error: HTTP status = error_code, and Telegram's description."""

    def __init__(self, error_code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return JSONResponse(body, status_code=self.error_code)


def bad_request(reason: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {reason}")


def utf16_len(text: str) -> int:
    """Telegram measures text and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


# --- parameters --------------------------------------------------------------------------------------------------


class Params:
    """A call's parameters, whichever way they came (form text, JSON values or query string)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def raw(self, name: str) -> Any:
        value = self.values.get(name)
        return None if value is None or value == "" else value

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        return None if value is None else str(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def number(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)

    def json(self, name: str) -> Any:
        value = self.raw(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value


async def request_values(request: Request) -> dict[str, Any]:
    """Query string, then the body: JSON, urlencoded or multipart (files are not kept)."""
    values: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await request.body()
        if body.strip():
            try:
                data = json.loads(body)
            except json.JSONDecodeError:
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(data, dict):
                raise bad_request("JSON request body must be an object")
            values.update(data)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                values[key] = f"attach://{value.filename or key}"  # files are accepted, not stored
            else:
                values[key] = value
    return values


async def body_values(content_type: str, body: bytes) -> dict[str, Any]:
    """Parse a body the way a Bot API request is parsed (used for a webhook's reply-with-a-method)."""
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode("latin-1"))]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return await request_values(Request(scope, receive))


# --- HTML parse mode ---------------------------------------------------------------------------------------------

_HTML_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}


class _TelegramHTML(HTMLParser):
    """Telegram's HTML subset (https://core.telegram.org/bots/api#html-style) to plain text + entities."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source_lines = source.splitlines(keepends=True)
        self.parts: list[str] = []
        self.position = 0  # UTF-16 units of plain text so far
        self.stack: list[tuple[str, dict[str, str | None], int]] = []
        self.entities: list[dict[str, Any]] = []

    def _byte_offset(self) -> int:
        line, column = self.getpos()
        before = "".join(self.source_lines[: line - 1]) + (self.source_lines[line - 1][:column]
                                                           if line - 1 < len(self.source_lines) else "")
        return len(before.encode())

    def handle_data(self, data: str) -> None:
        self.parts.append(data)
        self.position += utf16_len(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag not in _HTML_ENTITY_TYPES or (tag == "span" and attributes.get("class") != "tg-spoiler"):
            raise bad_request(f'can\'t parse entities: Unsupported start tag "{tag}" at byte offset '
                              f"{self._byte_offset()}")
        self.stack.append((tag, attributes, self.position))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack:
            raise bad_request(f'can\'t parse entities: Unexpected end tag at byte offset {self._byte_offset()}')
        open_tag, attributes, start = self.stack.pop()
        if open_tag != tag:
            raise bad_request(f"can't parse entities: Unmatched end tag at byte offset {self._byte_offset()}, "
                              f'expected "</{open_tag}>", found "</{tag}>"')
        length = self.position - start
        language = (attributes.get("class") or "").removeprefix("language-") if tag == "code" else ""
        if tag == "code" and self.stack and self.stack[-1][0] == "pre" and language:
            self.stack[-1][1]["data-language"] = language  # <pre><code class="language-x"> is one pre entity
            return
        if length == 0:
            return
        entity: dict[str, Any] = {"type": _HTML_ENTITY_TYPES[tag], "offset": start, "length": length}
        if tag == "a":
            entity["url"] = attributes.get("href") or ""
        elif tag == "pre" and attributes.get("data-language"):
            entity["language"] = attributes["data-language"]
        elif tag == "blockquote" and "expandable" in attributes:
            entity["type"] = "expandable_blockquote"
        elif tag == "tg-emoji":
            entity["custom_emoji_id"] = attributes.get("emoji-id") or ""
        self.entities.append(entity)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        self.close()
        if self.stack:
            raise bad_request(f'can\'t parse entities: Can\'t find end tag corresponding to start tag '
                              f'"{self.stack[-1][0]}"')
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), self.entities


def parse_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text as Telegram stores it (markup removed for HTML), and its entities."""
    if parse_mode and parse_mode.lower() == "html":
        # Telegram reads every "<" as a tag; html.parser would take "<" before a non-letter as text.
        stray = re.search(r"<(?!/?[A-Za-z])", text)
        if stray:
            name = re.match(r"[^\s>]*", text[stray.end():])
            raise bad_request(f'can\'t parse entities: Unsupported start tag "{name.group() if name else ""}" at byte '
                              f"offset {len(text[: stray.start()].encode())}")
        parser = _TelegramHTML(text)
        parser.feed(text)
        return parser.finish()
    # Markdown and MarkdownV2 are stored as sent (not parsed by the sandbox); explicit entities are kept.
    return text, entities if isinstance(entities, list) else []


def command_entities(text: str) -> list[dict[str, Any]]:
    """A citizen's `/command` gets a bot_command entity, as Telegram's clients send it."""
    if not text.startswith("/"):
        return []
    command = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]


# --- state -------------------------------------------------------------------------------------------------------


@dataclass
class Citizen:
    user_id: int
    first_name: str
    phone: str | None = None
    language_code: str | None = "zh-hans"

    def user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.user_id, "is_bot": False, "first_name": self.first_name}
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def chat(self) -> dict[str, Any]:
        return {"id": self.user_id, "type": "private", "first_name": self.first_name}

    def public(self) -> dict[str, Any]:
        return {"chat_id": self.user_id, "user_id": self.user_id, "first_name": self.first_name,
                "phone": self.phone, "language_code": self.language_code}


@dataclass
class StoredMessage:
    message_id: int
    sender: str  # "bot" or "user"
    date: int
    sent_at: float  # unix time with sub-second precision
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None
    contact: dict[str, Any] | None = None
    edit_date: int | None = None

    def public(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "from": self.sender, "text": self.text, "entities": self.entities,
                "reply_markup": self.reply_markup, "contact": self.contact, "date": self.date,
                "edited": self.edit_date is not None, "edit_date": self.edit_date, "sent_at": self.sent_at}


@dataclass
class Conversation:
    """One private chat as one bot sees it."""

    chat_id: int
    messages: list[StoredMessage] = field(default_factory=list)
    next_message_id: int = 1
    blocked: bool = False
    reply_keyboard: dict[str, Any] | None = None  # the ReplyKeyboardMarkup in force, if any
    recent_sends: deque[float] = field(default_factory=deque)  # monotonic times in the last second
    last_send: float | None = None
    last_action: str | None = None
    last_action_at: float = 0.0

    def find(self, message_id: int) -> StoredMessage | None:
        for message in reversed(self.messages):
            if message.message_id == message_id:
                return message
        return None


@dataclass
class CallbackRecord:
    callback_query_id: str
    chat_id: int
    message_id: int
    data: str
    answered: bool = False
    text: str | None = None
    show_alert: bool = False
    url: str | None = None


@dataclass
class Limits:
    global_per_s: int = DEFAULT_GLOBAL_PER_S  # 0 = no limit
    per_chat_per_s: int = DEFAULT_PER_CHAT_PER_S

    def public(self) -> dict[str, int]:
        return {"global_per_s": self.global_per_s, "per_chat_per_s": self.per_chat_per_s}


@dataclass
class Stats:
    sent: int = 0
    rejected_429: int = 0
    blocked_403: int = 0
    # Accepted sends less than 1 s after the previous one to the same chat: what real Telegram refuses.
    per_chat_violations: int = 0
    first_send_at: float | None = None
    last_send_at: float | None = None
    webhook_delivered: int = 0
    webhook_failed_attempts: int = 0
    webhook_dropped: int = 0
    # getUpdates calls ended by a newer getUpdates of the same bot: two pollers fighting over one token.
    polls_conflicted_409: int = 0
    # The most sends accepted within any sliding second, on arrival (with the limits off, what the bot really did).
    max_sent_in_any_second: int = 0

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TelegramFaults:
    """Injected faults (crash drills, tests): a 429 storm on the Bot API, and counts of what it refused.

    During a storm every Bot API method (or only those in `methods`) answers 429 with
    `parameters.retry_after`, as Telegram's flood control does, whatever the send limits say.
    """

    storm_until: float = 0.0  # time.monotonic() when the storm ends
    retry_after_s: int | None = None  # None: the seconds left in the storm, rounded up
    methods: frozenset[str] | None = None  # lower-case method names; None: every method
    storm_429: int = 0
    blocked_by_wave: int = 0

    def storm_left_s(self) -> float:
        return max(0.0, self.storm_until - time.monotonic())

    def check(self, method: str) -> None:
        left_s = self.storm_left_s()
        if left_s <= 0 or (self.methods is not None and method.lower() not in self.methods):
            return
        retry_after = self.retry_after_s if self.retry_after_s is not None else max(1, math.ceil(left_s))
        self.storm_429 += 1
        raise TelegramError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)

    def public(self) -> dict[str, Any]:
        return {"storm_left_s": round(self.storm_left_s(), 3), "retry_after_s": self.retry_after_s,
                "methods": sorted(self.methods) if self.methods is not None else None,
                "storm_429": self.storm_429, "blocked_by_wave": self.blocked_by_wave}


class BotState:
    """Everything one bot id has: its update queue, chats, webhook, commands and counters."""

    def __init__(self, bot_id: int) -> None:
        self.bot_id = bot_id
        self.updates: list[dict[str, Any]] = []  # pending, in update_id order
        self.next_update_id = FIRST_UPDATE_ID
        self.allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.conversations: dict[int, Conversation] = {}
        self.callbacks: dict[str, CallbackRecord] = {}
        self.commands: dict[str, list[dict[str, str]]] = {}
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_max_connections = 40
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.recent_sends: deque[float] = deque()
        # (unix time, chat_id, message_id) of each accepted send, in arrival order: rates over any window.
        self.send_log: deque[tuple[float, int, int]] = deque(maxlen=MAX_SEND_LOG)
        self.stats = Stats()
        self.poll_generation = 0
        self.closed = False
        self.delivery_task: asyncio.Task[None] | None = None
        self._changed = ChangeSignal()

    @property
    def username(self) -> str:
        return f"shouhu_sandbox_{self.bot_id}_bot"

    def user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "守护 Shouhu (sandbox)", "username": self.username}

    def notify(self) -> None:
        """Wake every waiter (long polls, webhook delivery, control-API waits); each re-checks its condition."""
        self._changed.fire()

    async def wait_change(self, timeout_s: float) -> None:
        await self._changed.wait(timeout_s)


MethodHandler = Callable[["TelegramSandbox", BotState, Params], Awaitable[Any]]
METHODS: dict[str, MethodHandler] = {}


def bot_method(*names: str) -> Callable[[MethodHandler], MethodHandler]:
    def register(handler: MethodHandler) -> MethodHandler:
        for name in names:
            METHODS[name.lower()] = handler
        return handler

    return register


class TelegramSandbox:
    """The fake Telegram: citizens, per-bot state, limits, and webhook delivery."""

    def __init__(self, *, webhook_backoff_s: tuple[float, ...] = WEBHOOK_BACKOFF_S,
                 webhook_timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
        self.webhook_backoff_s = webhook_backoff_s
        self.webhook_timeout_s = webhook_timeout_s
        self._http: httpx.AsyncClient | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.citizens: dict[int, Citizen] = {}
        self.bots: dict[int, BotState] = {}
        self.limits = Limits()
        self.faults = TelegramFaults()
        self.last_bot_id: int | None = None
        self._user_ids = itertools.count(FIRST_USER_ID)

    # -- bots --

    def bot(self, bot_id: int) -> BotState:
        state = self.bots.get(bot_id)
        if state is None:
            state = self.bots[bot_id] = BotState(bot_id)
        return state

    def api_bot(self, bot_id: int) -> BotState:
        """The state of a bot calling the Bot API (the first bot to connect adopts the provisional default)."""
        if self.last_bot_id is None and bot_id not in self.bots and DEFAULT_BOT_ID in self.bots:
            state = self.bots.pop(DEFAULT_BOT_ID)
            state.bot_id = bot_id
            self.bots[bot_id] = state
        self.last_bot_id = bot_id
        return self.bot(bot_id)

    def target(self, bot_id: int | None) -> BotState:
        """The bot a control-API call acts on."""
        if bot_id is not None:
            return self.bot(bot_id)
        if self.last_bot_id is not None:
            return self.bot(self.last_bot_id)
        return self.bot(DEFAULT_BOT_ID)

    def conversation(self, bot: BotState, chat_id: int) -> Conversation | None:
        if chat_id not in self.citizens:
            return None
        conv = bot.conversations.get(chat_id)
        if conv is None:
            conv = bot.conversations[chat_id] = Conversation(chat_id)
        return conv

    def chat_for_bot(self, bot: BotState, params: Params) -> Conversation:
        raw = params.raw("chat_id")
        if raw is None:
            raise bad_request("chat_id is empty")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None
        conv = self.conversation(bot, chat_id)
        if conv is None:
            raise bad_request("chat not found")
        return conv

    # -- updates --

    def push_update(self, bot: BotState, kind: str, payload: dict[str, Any]) -> int | None:
        """Queue an update (unless the bot's allowed_updates excludes its type) and wake its readers."""
        if kind not in bot.allowed_updates:
            return None
        update_id = bot.next_update_id
        bot.next_update_id += 1
        bot.updates.append({"update_id": update_id, kind: payload})
        bot.notify()
        if bot.webhook_url:
            self._ensure_delivery(bot)
        return update_id

    def message_dict(self, bot: BotState, conv: Conversation, message: StoredMessage) -> dict[str, Any]:
        citizen = self.citizens[conv.chat_id]
        result: dict[str, Any] = {
            "message_id": message.message_id,
            "from": bot.user() if message.sender == "bot" else citizen.user(),
            "chat": citizen.chat(),
            "date": message.date,
        }
        if message.edit_date is not None:
            result["edit_date"] = message.edit_date
        if message.text is not None:
            result["text"] = message.text
        if message.entities:
            result["entities"] = message.entities
        if message.contact is not None:
            result["contact"] = message.contact
        # A Message only ever carries an inline keyboard; reply keyboards live in the chat's input field.
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            result["reply_markup"] = message.reply_markup
        return result

    def _store(self, conv: Conversation, sender: str, **fields: Any) -> StoredMessage:
        now = time.time()
        message = StoredMessage(message_id=conv.next_message_id, sender=sender, date=int(now), sent_at=round(now, 3),
                                **fields)
        conv.next_message_id += 1
        conv.messages.append(message)
        return message

    def _set_blocked(self, bot: BotState, conv: Conversation, blocked: bool) -> None:
        if conv.blocked == blocked:
            return
        conv.blocked = blocked
        citizen = self.citizens[conv.chat_id]
        member = {"status": "member", "user": bot.user()}
        kicked = {"status": "kicked", "user": bot.user(), "until_date": 0}
        self.push_update(bot, "my_chat_member", {
            "chat": citizen.chat(), "from": citizen.user(), "date": int(time.time()),
            "old_chat_member": member if blocked else kicked,
            "new_chat_member": kicked if blocked else member,
        })

    # -- citizens (control API) --

    def create_citizen(self, *, user_id: int | None, first_name: str | None, phone: str | None,
                       language_code: str | None) -> Citizen:
        if user_id is not None and user_id in self.citizens:
            return self.citizens[user_id]
        if user_id is None:
            user_id = next(self._user_ids)
            while user_id in self.citizens:
                user_id = next(self._user_ids)
        citizen = Citizen(user_id=user_id, first_name=first_name or f"市民{user_id % 10000:04d}", phone=phone,
                          language_code=language_code or "zh-hans")
        self.citizens[user_id] = citizen
        return citizen

    def citizen_conversation(self, bot: BotState, chat_id: int) -> Conversation:
        conv = self.conversation(bot, chat_id)
        if conv is None:
            raise HTTPException(404, f"no chat {chat_id}; create it with POST /sandbox/telegram/chats")
        return conv

    def citizen_sends(self, bot: BotState, chat_id: int, text: str) -> dict[str, Any]:
        conv = self.citizen_conversation(bot, chat_id)
        self._set_blocked(bot, conv, False)  # writing to a blocked bot unblocks it, like the app's "Restart"
        message = self._store(conv, "user", text=text, entities=command_entities(text))
        self._used_reply_keyboard(conv, text=text)
        update_id = self.push_update(bot, "message", self.message_dict(bot, conv, message))
        bot.notify()
        return {"update_id": update_id, "message_id": message.message_id}

    def citizen_shares_contact(self, bot: BotState, chat_id: int, *, phone_number: str | None, user_id: int | None,
                               first_name: str | None) -> dict[str, Any]:
        conv = self.citizen_conversation(bot, chat_id)
        citizen = self.citizens[chat_id]
        own = user_id is None or user_id == citizen.user_id
        phone = phone_number or (citizen.phone if own else None)
        if not phone:
            raise HTTPException(422, "phone_number is required (this citizen has no phone of their own)")
        contact: dict[str, Any] = {"phone_number": phone,
                                   "first_name": first_name or (citizen.first_name if own else "联系人")}
        if user_id != 0:  # 0: someone who is not on Telegram, so the card carries no user_id
            contact["user_id"] = citizen.user_id if user_id is None else user_id
        self._set_blocked(bot, conv, False)
        message = self._store(conv, "user", contact=contact)
        self._used_reply_keyboard(conv, contact=True)
        update_id = self.push_update(bot, "message", self.message_dict(bot, conv, message))
        bot.notify()
        return {"update_id": update_id, "message_id": message.message_id}

    @staticmethod
    def _used_reply_keyboard(conv: Conversation, *, text: str | None = None, contact: bool = False) -> None:
        """A one-time reply keyboard hides once the citizen uses one of its buttons."""
        keyboard = conv.reply_keyboard
        if not keyboard or not keyboard.get("one_time_keyboard"):
            return
        for row in keyboard.get("keyboard") or []:
            for button in row:
                label = button if isinstance(button, str) else button.get("text")
                wants_contact = isinstance(button, dict) and button.get("request_contact")
                if (contact and wants_contact) or (text is not None and label == text and not wants_contact):
                    conv.reply_keyboard = None
                    return

    def citizen_presses(self, bot: BotState, chat_id: int, *, message_id: int, data: str | None,
                        button_text: str | None, forge: bool = False) -> dict[str, Any]:
        conv = self.citizen_conversation(bot, chat_id)
        message = conv.find(message_id)
        if message is None or message.sender != "bot":
            raise HTTPException(404, f"no message {message_id} from the bot in chat {chat_id}")
        keyboard = (message.reply_markup or {}).get("inline_keyboard") or []
        found = None
        for row in keyboard:
            for button in row:
                if (data is not None and button.get("callback_data") == data) or (
                        data is None and button_text is not None and button.get("text") == button_text):
                    found = button
                    break
            if found:
                break
        if found is None and forge and data is not None:
            found = {"text": "(forged)", "callback_data": data}
        if found is None:
            raise HTTPException(404, f"message {message_id} has no inline button "
                                     f"{'with data ' + repr(data) if data is not None else repr(button_text)}")
        if "callback_data" not in found:
            raise HTTPException(422, f"button {found.get('text')!r} is not a callback button")
        callback_id = str(secrets.randbits(62))
        citizen = self.citizens[chat_id]
        bot.callbacks[callback_id] = CallbackRecord(callback_id, chat_id, message_id, found["callback_data"])
        update_id = self.push_update(bot, "callback_query", {
            "id": callback_id,
            "from": citizen.user(),
            "message": self.message_dict(bot, conv, message),
            "chat_instance": str((bot.bot_id * 1_000_003 + chat_id) % 10**18),
            "data": found["callback_data"],
        })
        return {"update_id": update_id, "callback_query_id": callback_id}

    def block(self, bot: BotState, chat_id: int, blocked: bool) -> dict[str, Any]:
        conv = self.citizen_conversation(bot, chat_id)
        self._set_blocked(bot, conv, blocked)
        bot.notify()
        return {"chat_id": chat_id, "blocked": conv.blocked}

    # -- sending rules --

    def admit_send(self, bot: BotState, conv: Conversation) -> None:
        """Apply Telegram's limits to one sendMessage: refuse with 429, or count it as sent."""
        now = time.monotonic()
        for window in (bot.recent_sends, conv.recent_sends):
            while window and now - window[0] >= 1.0:
                window.popleft()
        waits = []
        for window, limit in ((bot.recent_sends, self.limits.global_per_s),
                              (conv.recent_sends, self.limits.per_chat_per_s)):
            if limit and len(window) >= limit:
                waits.append(window[-limit] + 1.0 - now)  # when the send that must leave the window leaves it
        if waits:
            retry_after = max(1, math.ceil(max(waits)))
            bot.stats.rejected_429 += 1
            raise TelegramError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
        if conv.last_send is not None and now - conv.last_send < 1.0:
            bot.stats.per_chat_violations += 1
        conv.last_send = now
        bot.recent_sends.append(now)
        conv.recent_sends.append(now)
        wall = round(time.time(), 3)
        bot.stats.sent += 1
        bot.stats.max_sent_in_any_second = max(bot.stats.max_sent_in_any_second, len(bot.recent_sends))
        bot.stats.first_send_at = bot.stats.first_send_at or wall
        bot.stats.last_send_at = wall

    # -- webhook delivery --

    def _ensure_delivery(self, bot: BotState) -> None:
        if bot.delivery_task is None or bot.delivery_task.done():
            bot.delivery_task = asyncio.create_task(self._deliver(bot), name=f"telegram-webhook-{bot.bot_id}")

    async def _deliver(self, bot: BotState) -> None:
        """POST pending updates to the webhook one at a time, in order, retrying each with backoff."""
        while bot.webhook_url and not bot.closed:
            if not bot.updates:
                await bot.wait_change(30)
                continue
            update = bot.updates[0]
            url = bot.webhook_url
            interrupted = False
            for attempt, pause in enumerate((0.0, *self.webhook_backoff_s)):
                if pause:
                    await asyncio.sleep(pause)
                if bot.closed or bot.webhook_url != url or not bot.updates or bot.updates[0] is not update:
                    interrupted = True  # the webhook changed or the update went meanwhile: look again
                    break
                if await self._post_update(bot, url, update):
                    break
                log.info("sandbox.telegram.webhook_retry", bot_id=bot.bot_id, attempt=attempt + 1,
                         error=bot.last_error_message)
            else:
                bot.stats.webhook_dropped += 1
                log.warning("sandbox.telegram.webhook_dropped", bot_id=bot.bot_id, update_id=update["update_id"])
            if not interrupted and bot.updates and bot.updates[0] is update:
                bot.updates.pop(0)  # delivered, or given up on after the last retry
                bot.notify()

    async def _post_update(self, bot: BotState, url: str, update: dict[str, Any]) -> bool:
        headers = {"Content-Type": "application/json"}
        if bot.webhook_secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = bot.webhook_secret
        try:
            response = await self.http().post(url, content=json.dumps(update, ensure_ascii=False).encode(),
                                              headers=headers)
        except httpx.HTTPError as exc:
            self._webhook_failed(bot, f"Connection failed: {type(exc).__name__}: {exc}")
            return False
        if not 200 <= response.status_code < 300:
            self._webhook_failed(bot, f"Wrong response from the webhook: {response.status_code} "
                                      f"{response.reason_phrase}")
            return False
        bot.stats.webhook_delivered += 1
        await self._webhook_reply(bot, response)
        return True

    def _webhook_failed(self, bot: BotState, message: str) -> None:
        bot.stats.webhook_failed_attempts += 1
        bot.last_error_date = int(time.time())
        bot.last_error_message = message

    async def _webhook_reply(self, bot: BotState, response: httpx.Response) -> None:
        """Telegram runs a method given in the webhook's answer (aiogram does this when not handling in background)."""
        if not response.content.strip():
            return
        try:
            values = await body_values(response.headers.get("content-type", "application/json"), response.content)
        except (TelegramError, ValueError):
            return
        method = values.pop("method", None)
        if not method or str(method).lower() not in METHODS or str(method).lower() == "getupdates":
            return
        try:
            await METHODS[str(method).lower()](self, bot, Params(values))
        except TelegramError as exc:  # Telegram reports nothing back for these; the log is all there is
            log.info("sandbox.telegram.webhook_reply_failed", method=method, error=exc.description)

    def http(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=self.webhook_timeout_s)
        return self._http

    # -- lifecycle --

    async def reset(self) -> None:
        await self._stop_bots()
        self._reset_state()

    async def aclose(self) -> None:
        await self._stop_bots()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _stop_bots(self) -> None:
        tasks = []
        for bot in self.bots.values():
            bot.closed = True
            bot.notify()
            if bot.delivery_task is not None and not bot.delivery_task.done():
                bot.delivery_task.cancel()
                tasks.append(bot.delivery_task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the Bot API entry point --

    async def call(self, token: str, method: str, params: Params) -> Any:
        match = TOKEN_RE.match(token)
        if not match:
            raise TelegramError(401, "Unauthorized")
        handler = METHODS.get(method.lower())
        if handler is None:
            raise TelegramError(404, "Not Found")
        self.faults.check(method)
        return await handler(self, self.api_bot(int(match.group(1))), params)


# --- Bot API methods ---------------------------------------------------------------------------------------------


@bot_method("getMe")
async def get_me(sandbox: TelegramSandbox, bot: BotState, params: Params) -> dict[str, Any]:
    return {**bot.user(), "can_join_groups": False, "can_read_all_group_messages": False,
            "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}


def _allowed(value: Any, current: frozenset[str]) -> frozenset[str]:
    if value is None:
        return current  # not given: the previous setting stays, as in Telegram
    if not isinstance(value, list):
        raise bad_request("can't parse allowed_updates JSON object")
    return frozenset(str(v) for v in value) or DEFAULT_UPDATE_TYPES


@bot_method("getUpdates")
async def get_updates(sandbox: TelegramSandbox, bot: BotState, params: Params) -> list[dict[str, Any]]:
    if bot.webhook_url:
        raise TelegramError(409, GET_UPDATES_WHILE_WEBHOOK)
    offset = params.integer("offset", 0) or 0
    limit = min(max(params.integer("limit", 100) or 100, 1), 100)
    timeout_s = max(params.number("timeout", 0.0), 0.0)
    bot.allowed_updates = _allowed(params.json("allowed_updates"), bot.allowed_updates)
    if offset > 0:
        bot.updates = [u for u in bot.updates if u["update_id"] >= offset]  # earlier ones are confirmed
    elif offset < 0:
        bot.updates = bot.updates[offset:]  # keep the last -offset updates; the rest are forgotten
    bot.poll_generation += 1
    generation = bot.poll_generation
    bot.notify()  # an older long poll of this bot ends with 409, as in Telegram
    deadline = time.monotonic() + timeout_s
    while True:
        if bot.closed:
            return []
        if bot.webhook_url:
            raise TelegramError(409, GET_UPDATES_WHILE_WEBHOOK)
        if bot.poll_generation != generation:
            bot.stats.polls_conflicted_409 += 1
            raise TelegramError(409, GET_UPDATES_TERMINATED)
        if bot.updates:
            return bot.updates[:limit]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        await bot.wait_change(remaining)


@bot_method("setWebhook")
async def set_webhook(sandbox: TelegramSandbox, bot: BotState, params: Params) -> JSONResponse:
    url = params.text("url") or ""
    if url and not url.lower().startswith(("http://", "https://")):
        # Real Telegram wants HTTPS on port 443, 80, 88 or 8443; the sandbox also takes plain HTTP on any port.
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    secret = params.text("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise bad_request("secret token contains unallowed characters")
    bot.allowed_updates = _allowed(params.json("allowed_updates"), bot.allowed_updates)
    if params.flag("drop_pending_updates"):
        bot.updates.clear()
    bot.webhook_max_connections = params.integer("max_connections", 40) or 40
    bot.webhook_secret = secret if url else None
    changed = bot.webhook_url != url
    bot.webhook_url = url
    if changed:
        bot.last_error_date = bot.last_error_message = None
    bot.notify()
    if url:
        sandbox._ensure_delivery(bot)
        description = "Webhook was set" if changed else "Webhook is already set"
    else:
        description = "Webhook was deleted" if changed else "Webhook is already deleted"
    return JSONResponse({"ok": True, "result": True, "description": description})


@bot_method("deleteWebhook")
async def delete_webhook(sandbox: TelegramSandbox, bot: BotState, params: Params) -> JSONResponse:
    return await set_webhook(sandbox, bot, Params({"drop_pending_updates": params.raw("drop_pending_updates")}))


@bot_method("getWebhookInfo")
async def get_webhook_info(sandbox: TelegramSandbox, bot: BotState, params: Params) -> dict[str, Any]:
    info: dict[str, Any] = {"url": bot.webhook_url, "has_custom_certificate": False,
                            "pending_update_count": len(bot.updates)}
    if bot.webhook_url:
        info["max_connections"] = bot.webhook_max_connections
        if bot.allowed_updates != DEFAULT_UPDATE_TYPES:
            info["allowed_updates"] = sorted(bot.allowed_updates)
    if bot.last_error_date is not None:
        info["last_error_date"] = bot.last_error_date
        info["last_error_message"] = bot.last_error_message
    return info


def _markup(params: Params) -> dict[str, Any] | None:
    """The reply_markup parameter, checked the way Telegram checks it."""
    markup = params.json("reply_markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request("field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the "
                                      "inline keyboard")
                actions = [key for key in INLINE_BUTTON_ACTIONS if key in button]
                if len(actions) != 1:
                    raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the "
                                      "inline keyboard")
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                        raise bad_request("BUTTON_DATA_INVALID")
        return markup
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request("field \"keyboard\" of the ReplyKeyboardMarkup must be an Array of Arrays")
        return markup
    if markup.get("remove_keyboard") or markup.get("force_reply"):
        return markup
    raise bad_request("can't parse reply keyboard markup JSON object")


def _message_text(params: Params, name: str = "text") -> tuple[str, list[dict[str, Any]]]:
    raw = params.text(name)
    if raw is None:
        raise bad_request("message text is empty")
    text, entities = parse_text(raw, params.text("parse_mode"), params.json("entities"))
    if not text.strip():
        raise bad_request("message text is empty")
    if utf16_len(text) > MAX_TEXT_UTF16:
        raise bad_request("message is too long")
    return text, entities


def _writable(bot: BotState, conv: Conversation) -> None:
    if conv.blocked:
        bot.stats.blocked_403 += 1
        raise TelegramError(403, "Forbidden: bot was blocked by the user")


@bot_method("sendMessage")
async def send_message(sandbox: TelegramSandbox, bot: BotState, params: Params) -> dict[str, Any]:
    conv = sandbox.chat_for_bot(bot, params)
    _writable(bot, conv)
    text, entities = _message_text(params)
    markup = _markup(params)
    sandbox.admit_send(bot, conv)
    if markup is not None:
        if "keyboard" in markup:
            conv.reply_keyboard = markup
        elif markup.get("remove_keyboard"):
            conv.reply_keyboard = None
    message = sandbox._store(conv, "bot", text=text, entities=entities, reply_markup=markup)
    bot.send_log.append((message.sent_at, conv.chat_id, message.message_id))
    conv.last_action = None
    bot.notify()
    return sandbox.message_dict(bot, conv, message)


def _editable(sandbox: TelegramSandbox, bot: BotState, params: Params) -> tuple[Conversation, StoredMessage]:
    if params.raw("inline_message_id") is not None:
        raise bad_request("message to edit not found")  # the sandbox has no inline mode
    conv = sandbox.chat_for_bot(bot, params)
    message_id = params.integer("message_id")
    if message_id is None:
        raise bad_request("message identifier is not specified")
    _writable(bot, conv)
    message = conv.find(message_id)
    if message is None:
        raise bad_request("message to edit not found")
    if message.sender != "bot" or message.text is None:
        raise bad_request("message can't be edited")
    return conv, message


def _inline_only(markup: dict[str, Any] | None) -> dict[str, Any] | None:
    if markup is not None and "inline_keyboard" not in markup:
        raise bad_request("inline keyboard expected")
    return markup


def _apply_edit(sandbox: TelegramSandbox, bot: BotState, conv: Conversation, message: StoredMessage, *, text: str,
                entities: list[dict[str, Any]], markup: dict[str, Any] | None) -> dict[str, Any]:
    current = message.reply_markup if message.reply_markup and "inline_keyboard" in message.reply_markup else None
    if (text, entities, markup or None) == (message.text, message.entities, current):
        raise bad_request(NOT_MODIFIED.removeprefix("Bad Request: "))
    message.text, message.entities, message.reply_markup = text, entities, markup
    message.edit_date = int(time.time())
    bot.notify()
    return sandbox.message_dict(bot, conv, message)


@bot_method("editMessageText")
async def edit_message_text(sandbox: TelegramSandbox, bot: BotState, params: Params) -> dict[str, Any]:
    conv, message = _editable(sandbox, bot, params)
    text, entities = _message_text(params)
    return _apply_edit(sandbox, bot, conv, message, text=text, entities=entities,
                       markup=_inline_only(_markup(params)))


@bot_method("editMessageReplyMarkup")
async def edit_message_reply_markup(sandbox: TelegramSandbox, bot: BotState, params: Params) -> dict[str, Any]:
    conv, message = _editable(sandbox, bot, params)
    return _apply_edit(sandbox, bot, conv, message, text=message.text or "", entities=message.entities,
                       markup=_inline_only(_markup(params)))


@bot_method("deleteMessage")
async def delete_message(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    conv = sandbox.chat_for_bot(bot, params)
    message = conv.find(params.integer("message_id") or 0)
    if message is None:
        raise bad_request("message to delete not found")
    conv.messages.remove(message)
    bot.notify()
    return True


@bot_method("answerCallbackQuery")
async def answer_callback_query(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    record = bot.callbacks.get(params.text("callback_query_id") or "")
    if record is None or record.answered:
        raise bad_request(CALLBACK_INVALID.removeprefix("Bad Request: "))
    record.answered = True
    record.text = params.text("text")
    record.show_alert = params.flag("show_alert")
    record.url = params.text("url")
    bot.notify()
    return True


def _commands_key(params: Params) -> str:
    scope = params.json("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True) + "|" + (params.text("language_code") or "")


@bot_method("setMyCommands")
async def set_my_commands(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    commands = params.json("commands")
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    cleaned = []
    for command in commands:
        if not isinstance(command, dict) or not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise bad_request("command description is empty")
        cleaned.append({"command": command["command"], "description": command["description"]})
    bot.commands[_commands_key(params)] = cleaned
    return True


@bot_method("deleteMyCommands")
async def delete_my_commands(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    bot.commands.pop(_commands_key(params), None)
    return True


@bot_method("getMyCommands")
async def get_my_commands(sandbox: TelegramSandbox, bot: BotState, params: Params) -> list[dict[str, str]]:
    return bot.commands.get(_commands_key(params), [])


@bot_method("sendChatAction")
async def send_chat_action(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    conv = sandbox.chat_for_bot(bot, params)
    action = params.text("action")
    if action not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    _writable(bot, conv)
    conv.last_action, conv.last_action_at = action, time.time()
    bot.notify()
    return True


@bot_method("close", "logOut")
async def close(sandbox: TelegramSandbox, bot: BotState, params: Params) -> bool:
    return True


# --- routes ------------------------------------------------------------------------------------------------------


class ChatIn(BaseModel):
    user_id: int | None = Field(None, gt=0)
    first_name: str | None = Field(None, max_length=64)
    phone: str | None = Field(None, max_length=32)
    language_code: str | None = Field(None, max_length=16)


class ChatsIn(BaseModel):
    phones: list[str] = Field(min_length=1, max_length=MAX_BULK_CHATS,
                              description="one new citizen per phone, in this order")
    language_code: str | None = Field(None, max_length=16)


class SendIn(BaseModel):
    text: str = Field(min_length=1, max_length=4096)


class ContactIn(BaseModel):
    phone_number: str | None = Field(None, max_length=32, description="default: the citizen's own phone")
    user_id: int | None = Field(None, ge=0, description="default: the citizen (own card); 0: not on Telegram")
    first_name: str | None = Field(None, max_length=64)


class PressIn(BaseModel):
    message_id: int
    data: str | None = None
    button: str | None = None
    # Send `data` even if no button on the message carries it: what a modified client, or a stale
    # keyboard after the bot changed its buttons, can make a bot receive. Tests of refusals use it.
    forge: bool = False


class BlockIn(BaseModel):
    blocked: bool = True


class LimitsIn(BaseModel):
    global_per_s: int | None = Field(None, ge=0, description="messages per second per bot; 0 = no limit")
    per_chat_per_s: int | None = Field(None, ge=0, description="messages per second per chat; 0 = no limit")


class FaultsIn(BaseModel):
    storm_s: float | None = Field(None, ge=0, le=3600, description="answer 429 to the Bot API for this long (0 ends it)")
    retry_after_s: int | None = Field(None, ge=1, le=3600,
                                      description="parameters.retry_after (default: the storm's seconds left)")
    methods: list[str] | None = Field(None, description="only these Bot API methods (default: all)")
    block_chat_ids: list[int] = Field(default_factory=list, max_length=100_000,
                                      description="a 403 wave: these citizens block the bot at once")


def _chat_summary(sandbox: TelegramSandbox, bot: BotState, citizen: Citizen) -> dict[str, Any]:
    conv = bot.conversations.get(citizen.user_id)
    messages = conv.messages if conv else []
    return {**citizen.public(), "blocked": bool(conv and conv.blocked), "messages": len(messages),
            "from_bot": sum(1 for m in messages if m.sender == "bot"),
            "from_user": sum(1 for m in messages if m.sender == "user"),
            "last_message_at": messages[-1].sent_at if messages else None}


def telegram_router(sandbox: TelegramSandbox) -> APIRouter:
    """The Bot API and the control API of one sandbox, as one router."""
    router = APIRouter()
    BotId = Query(None, description="the bot to act on (default: the bot that last called the Bot API)")

    async def bot_api(token: str, method: str, request: Request) -> JSONResponse:
        """Telegram's Bot API: `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, ...}`."""
        try:
            result = await sandbox.call(token, method, Params(await request_values(request)))
        except TelegramError as exc:
            return exc.response()
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse({"ok": True, "result": result})

    for verb in ("POST", "GET"):
        router.add_api_route("/bot{token}/{method}", bot_api, methods=[verb], tags=["telegram bot api"],
                             operation_id=f"telegram_bot_api_{verb.lower()}")

    prefix = "/sandbox/telegram"
    tags = ["telegram sandbox control"]

    @router.post(prefix + "/chats", tags=tags)
    async def create_chat(body: ChatIn | None = None) -> dict[str, Any]:
        """A citizen's private chat (chat_id == user_id); an existing user_id is returned unchanged."""
        body = body or ChatIn()
        citizen = sandbox.create_citizen(user_id=body.user_id, first_name=body.first_name, phone=body.phone,
                                         language_code=body.language_code)
        return citizen.public()

    @router.post(prefix + "/chats/bulk", tags=tags)
    async def create_chats(body: ChatsIn) -> dict[str, Any]:
        """Many citizens at once (benchmarks: 100,000 chats in one request): their chat ids, in the phones' order."""
        return {"chat_ids": [sandbox.create_citizen(user_id=None, first_name=None, phone=phone,
                                                    language_code=body.language_code).user_id
                             for phone in body.phones]}

    @router.get(prefix + "/chats", tags=tags)
    async def list_chats(bot_id: int | None = BotId) -> dict[str, Any]:
        """Every citizen's chat with message counts (as the target bot sees it)."""
        bot = sandbox.target(bot_id)
        return {"bot_id": bot.bot_id, "bot_username": bot.username,
                "chats": [_chat_summary(sandbox, bot, c) for c in sandbox.citizens.values()]}

    @router.post(prefix + "/chats/{chat_id}/send", tags=tags)
    async def citizen_send(chat_id: int, body: SendIn, bot_id: int | None = BotId) -> dict[str, Any]:
        """The citizen sends text to the bot (a `/command` carries a bot_command entity)."""
        return sandbox.citizen_sends(sandbox.target(bot_id), chat_id, body.text)

    @router.post(prefix + "/chats/{chat_id}/contact", tags=tags)
    async def citizen_contact(chat_id: int, body: ContactIn, bot_id: int | None = BotId) -> dict[str, Any]:
        """The citizen shares a contact card: their own by default, or someone else's (another user_id)."""
        return sandbox.citizen_shares_contact(sandbox.target(bot_id), chat_id, phone_number=body.phone_number,
                                              user_id=body.user_id, first_name=body.first_name)

    @router.post(prefix + "/chats/{chat_id}/press", tags=tags)
    async def citizen_press(chat_id: int, body: PressIn, bot_id: int | None = BotId) -> dict[str, Any]:
        """The citizen presses an inline button (by callback data or by its text) on one of the bot's messages."""
        if body.data is None and body.button is None:
            raise HTTPException(422, "give data or button")
        return sandbox.citizen_presses(sandbox.target(bot_id), chat_id, message_id=body.message_id, data=body.data,
                                       button_text=body.button, forge=body.forge)

    @router.post(prefix + "/chats/{chat_id}/block", tags=tags)
    async def citizen_block(chat_id: int, body: BlockIn, bot_id: int | None = BotId) -> dict[str, Any]:
        """The citizen blocks (or unblocks) the bot: sends to a blocked chat get 403."""
        return sandbox.block(sandbox.target(bot_id), chat_id, body.blocked)

    @router.get(prefix + "/chats/{chat_id}/messages", tags=tags)
    async def chat_messages(
        chat_id: int,
        bot_id: int | None = BotId,
        after: int = Query(0, description="only messages with a greater message_id"),
        sender: str | None = Query(None, alias="from", pattern="^(bot|user)$", description="only from bot or user"),
        wait: float = Query(0, ge=0, le=60, description="wait up to this many seconds for a matching message"),
    ) -> dict[str, Any]:
        """The conversation in order (the bot's messages as last edited), the reply keyboard in force, typing."""
        bot = sandbox.target(bot_id)
        conv = sandbox.citizen_conversation(bot, chat_id)
        deadline = time.monotonic() + wait

        def matching() -> list[StoredMessage]:
            return [m for m in conv.messages if m.message_id > after and (sender is None or m.sender == sender)]

        found = matching()
        while not found and (remaining := deadline - time.monotonic()) > 0 and not bot.closed:
            await bot.wait_change(remaining)
            found = matching()
        return {"chat_id": chat_id, "bot_id": bot.bot_id, "blocked": conv.blocked,
                "reply_keyboard": conv.reply_keyboard,
                "typing": conv.last_action is not None and time.time() - conv.last_action_at < 5,
                "messages": [m.public() for m in found]}

    @router.get(prefix + "/callbacks/{callback_query_id}", tags=tags)
    async def callback_answer(callback_query_id: str, bot_id: int | None = BotId) -> dict[str, Any]:
        """Whether the bot answered a button press, and with what."""
        bots = [sandbox.target(bot_id)] if bot_id is not None else list(sandbox.bots.values())
        for bot in bots:
            record = bot.callbacks.get(callback_query_id)
            if record is not None:
                return {"callback_query_id": record.callback_query_id, "answered": record.answered,
                        "text": record.text, "show_alert": record.show_alert, "url": record.url,
                        "chat_id": record.chat_id, "message_id": record.message_id, "data": record.data}
        raise HTTPException(404, f"no callback query {callback_query_id}")

    @router.get(prefix + "/limits", tags=tags)
    async def get_limits() -> dict[str, int]:
        """The send limits every bot is held to."""
        return sandbox.limits.public()

    @router.post(prefix + "/limits", tags=tags)
    async def set_limits(body: LimitsIn) -> dict[str, int]:
        """Change the send limits (defaults: Telegram's 30/s per bot and 1/s per chat; 0 = no limit)."""
        if body.global_per_s is not None:
            sandbox.limits.global_per_s = body.global_per_s
        if body.per_chat_per_s is not None:
            sandbox.limits.per_chat_per_s = body.per_chat_per_s
        return sandbox.limits.public()

    @router.get(prefix + "/stats", tags=tags)
    async def stats(bot_id: int | None = BotId) -> dict[str, Any]:
        """Send counters: of one bot with ?bot_id=, else summed over all bots (with each under `bots`)."""
        if bot_id is not None:
            return {**sandbox.target(bot_id).stats.public(), "limits": sandbox.limits.public()}
        per_bot = {str(b.bot_id): b.stats.public() for b in sandbox.bots.values()}
        total = Stats()
        for bot in sandbox.bots.values():
            s = bot.stats
            for name in ("sent", "rejected_429", "blocked_403", "per_chat_violations", "webhook_delivered",
                         "webhook_failed_attempts", "webhook_dropped"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.max_sent_in_any_second = max(total.max_sent_in_any_second, s.max_sent_in_any_second)  # per bot
            if s.first_send_at is not None:
                total.first_send_at = min(total.first_send_at or s.first_send_at, s.first_send_at)
                total.last_send_at = max(total.last_send_at or 0.0, s.last_send_at or 0.0)
        return {**total.public(), "limits": sandbox.limits.public(), "bots": per_bot}

    @router.get(prefix + "/sends", tags=tags)
    async def sends(bot_id: int | None = BotId,
                    since: float | None = Query(None, description="only sends accepted after this unix time"),
                    ) -> dict[str, Any]:
        """Every accepted sendMessage in arrival order (the newest 200,000): `[unix time, chat_id, message_id]`.

        With the limits off (POST /limits, 0), an excess is accepted and shows here: the most sends in any
        second is what the bot did, not what the sandbox let through.
        """
        bot = sandbox.target(bot_id)
        log = bot.send_log
        start = 0
        if since is not None:  # the log is in time order: skip to the first send after `since`
            start = next((i for i in range(len(log) - 1, -1, -1) if log[i][0] <= since), -1) + 1
        return {"bot_id": bot.bot_id, "sends": [list(e) for e in itertools.islice(log, start, None)]}

    @router.get(prefix + "/faults", tags=tags)
    async def get_faults() -> dict[str, Any]:
        """The injected faults in force, and what they refused so far."""
        return sandbox.faults.public()

    @router.post(prefix + "/faults", tags=tags)
    async def set_faults(body: FaultsIn, bot_id: int | None = BotId) -> dict[str, Any]:
        """Inject faults: a 429 storm (every Bot API method, for `storm_s`), and/or a wave of chats blocking the bot."""
        faults = sandbox.faults
        if body.storm_s is not None:
            faults.storm_until = time.monotonic() + body.storm_s
            faults.retry_after_s = body.retry_after_s
            faults.methods = frozenset(m.lower() for m in body.methods) if body.methods is not None else None
        if body.block_chat_ids:
            bot = sandbox.target(bot_id)
            unknown = [c for c in body.block_chat_ids if c not in sandbox.citizens]
            if unknown:
                raise HTTPException(404, f"no chat {unknown[0]}")
            for chat_id in body.block_chat_ids:
                conv = sandbox.citizen_conversation(bot, chat_id)
                if not conv.blocked:
                    faults.blocked_by_wave += 1
                sandbox._set_blocked(bot, conv, True)
            bot.notify()
        return faults.public()

    @router.post(prefix + "/reset", tags=tags)
    async def reset() -> dict[str, bool]:
        """Forget everything: citizens, bots, updates, webhooks, counters; limits back to Telegram's."""
        await sandbox.reset()
        return {"ok": True}

    return router
