"""Telegram's sending limits, kept by the bot itself so it never has to be told by a 429.

Telegram allows about 30 messages per second overall and 1 message per second
per chat (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this).

How: a message first waits its chat's turn (one message per chat in the pipe
at a time, at least `per_chat_interval_s` apart), then takes the next global
send slot. Global slots are handed out in increasing order, and slot k is at
least one second (plus a margin for network jitter) after slot k-30, so no
one-second window ever holds more than 30 sends. A chat waiting for its turn
never holds up other chats.

One limiter per bot process: run one delivering bot replica, or give each
replica its share with SHOUHU_BOT_GLOBAL_PER_S.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessage
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

log = structlog.get_logger(__name__)


class SendLimiter:
    def __init__(self, *, global_per_s: float = 30, per_chat_interval_s: float = 1.0, margin_s: float = 0.03,
                 clock=time.monotonic) -> None:  # noqa: ANN001
        self.global_per_s = max(1, int(global_per_s))
        self.per_chat_interval_s = per_chat_interval_s
        self.margin_s = margin_s
        self._clock = clock
        self._slots: deque[float] = deque(maxlen=self.global_per_s)  # the last N global slots, increasing
        self._slot_lock = asyncio.Lock()
        self._chat_locks: dict[int, asyncio.Lock] = {}
        self._next_for_chat: dict[int, float] = {}

    async def acquire(self, chat_id: int) -> None:
        """Wait until a message to `chat_id` keeps both limits; the caller sends right after."""
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            wait = self._next_for_chat.get(chat_id, 0.0) - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._slot_lock:
                now = self._clock()
                slot = now
                if len(self._slots) == self.global_per_s:
                    slot = max(slot, self._slots[0] + 1.0 + self.margin_s)
                slot = max(slot, self._slots[-1] if self._slots else slot)
                self._slots.append(slot)
            if slot > now:
                await asyncio.sleep(slot - now)
            self._next_for_chat[chat_id] = slot + self.per_chat_interval_s + self.margin_s
        if len(self._chat_locks) > 50_000:
            self._forget_idle_chats()

    def penalise(self, chat_id: int, retry_after_s: float) -> None:
        """Telegram said wait: no message to this chat before then."""
        self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0), self._clock() + retry_after_s)

    def _forget_idle_chats(self) -> None:
        now = self._clock()
        for chat_id in [c for c, lock in self._chat_locks.items()
                        if not lock.locked() and self._next_for_chat.get(c, 0.0) < now]:
            self._chat_locks.pop(chat_id, None)
            self._next_for_chat.pop(chat_id, None)


class LimitedSending(BaseRequestMiddleware):
    """aiogram request middleware: every sendMessage (alerts and replies alike) goes through the limiter.

    A 429 that still comes back (another process sharing the token, Telegram's
    own judgement) is waited out with tenacity: its retry_after, plus up to 10%
    jitter, capped, then the message is sent again, a few times at most.
    """

    def __init__(self, limiter: SendLimiter, *, max_retries: int = 3, cap_s: float = 60.0) -> None:
        self.limiter = limiter
        self.max_retries = max_retries
        self.cap_s = cap_s

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = float(getattr(exc, "retry_after", 1))
        return min(retry_after, self.cap_s) * (1 + random.random() * 0.1)

    async def __call__(self, make_request, bot, method):  # noqa: ANN001, ANN204
        if not isinstance(method, SendMessage):
            return await make_request(bot, method)
        chat_id = int(method.chat_id) if str(method.chat_id).lstrip("-").isdigit() else 0
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(TelegramRetryAfter), wait=self._wait,
                                           stop=stop_after_attempt(self.max_retries + 1), reraise=True):
            with attempt:
                await self.limiter.acquire(chat_id)
                try:
                    return await make_request(bot, method)
                except TelegramRetryAfter as exc:
                    # The limiter must not let this chat's next message go before Telegram's wait is over.
                    self.limiter.penalise(chat_id, float(exc.retry_after))
                    log.warning("bot.send", result="retry_after", retry_after_s=exc.retry_after, chat_id=chat_id)
                    raise
        raise AssertionError("unreachable")  # tenacity either returned or re-raised
