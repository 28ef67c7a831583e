"""Telegram's sending limits, kept by the bot itself so it never has to be told by a 429.

Telegram allows about 30 messages per second overall and 1 message per second
per chat (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this),
counted when requests *arrive*. Requests sent at evenly spaced moments do not
arrive evenly spaced (a burst is handled one request after another, a new
connection is slower), so spacing send times is not enough: that version got
429s in the 10,000-alert benchmark.

How, then: a send takes one of 30 tokens before its request and gives it back
one second after the *response* has come back (no margin is needed: the
request arrived before its response). A request
arrives somewhere between its start and its response, so any 30 consecutive
arrivals span more than a second, whatever the network does. Per chat, the
next message may start only a second after the previous one's response. A chat
waiting for its turn never holds up other chats.

One limiter per bot process: run one delivering bot replica, or give each
replica its share with SHOUHU_BOT_GLOBAL_PER_S.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessage
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

log = structlog.get_logger(__name__)


class SendLimiter:
    def __init__(self, *, global_per_s: float = 30, per_chat_interval_s: float = 1.0, margin_s: float = 0.0,
                 clock=time.monotonic) -> None:  # noqa: ANN001
        self.global_per_s = max(1, int(global_per_s))
        self.per_chat_interval_s = per_chat_interval_s
        self.margin_s = margin_s
        self._clock = clock
        self._tokens = asyncio.Semaphore(self.global_per_s)
        self._chat_locks: dict[int, asyncio.Lock] = {}
        self._next_for_chat: dict[int, float] = {}

    @asynccontextmanager
    async def slot(self, chat_id: int) -> AsyncIterator[None]:
        """Hold a sending slot for one request to `chat_id`: wait for the chat's turn and a token, send inside."""
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            wait = self._next_for_chat.get(chat_id, 0.0) - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._tokens.acquire()
            try:
                yield
            finally:
                # Counted from the response: the request has certainly arrived by now.
                asyncio.get_running_loop().call_later(1.0 + self.margin_s, self._tokens.release)
                self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0),
                                                   self._clock() + self.per_chat_interval_s + self.margin_s)
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
                try:
                    async with self.limiter.slot(chat_id):
                        return await make_request(bot, method)
                except TelegramRetryAfter as exc:
                    # The limiter must not let this chat's next message go before Telegram's wait is over.
                    self.limiter.penalise(chat_id, float(exc.retry_after))
                    log.warning("bot.send", result="retry_after", retry_after_s=exc.retry_after, chat_id=chat_id)
                    raise
        raise AssertionError("unreachable")  # tenacity either returned or re-raised
