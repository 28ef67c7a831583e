"""Telegram's sending limits, kept by every bot replica together so none has to be told by a 429.

Telegram allows about 30 messages per second per bot, 1 message per second
per chat and 20 per minute per group
(https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this),
counted when requests *arrive*. Requests sent at evenly spaced moments do not
arrive evenly spaced (a burst is handled one request after another, a new
connection is slower), so spacing send times is not enough: that version got
429s in the 10,000-alert benchmark.

How, then: a send takes one of 30 tokens before its request and gives it back
one second after the *response* has come back (no margin is needed: the
request arrived before its response). A request arrives somewhere between its
start and its response, so any 30 consecutive arrivals span more than a
second, whatever the network does. Per chat, the next message may start only a
second after the previous one's response (a group's, 3 s: 20 a minute). A
chat waiting for its turn never holds up other chats.

The tokens and the chats' turns are rows in PostgreSQL (shared/ratelimit), on
the database's clock, so every replica draws on the same 30 a second; a
replica that dies holding a token frees it when its lease runs out (seconds).
A 429's retry_after pushes the chat's turn out for every replica.

Lanes (who goes first when the tokens run short): publicity (`CAMPAIGN`) may
hold only the first 2/3 of the tokens, so a third is always free for alerts,
and a broadcast of any size delays an alert by at most about a second; alerts
(`ALERT`, also replies and notices) may take any token, and high-tier or
emergency alerts (`HIGH`) look first when a token frees. The sender picks the
lane by setting `SEND_LANE` (a context variable) around its sends.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessage
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from shared.ratelimit.service import Lane, SharedLimits

log = structlog.get_logger(__name__)

HIGH = Lane("high")
ALERT = Lane("alert", wake_delay_s=0.005)
CAMPAIGN_SHARE = 2 / 3  # of the bot's tokens that publicity may hold at once
SEND_LANE: ContextVar[Lane] = ContextVar("send_lane", default=ALERT)


@dataclass
class Slot:
    """A held sending slot for one chat; a 429 inside it pushes the chat's next turn out."""

    chat_id: int
    retry_after_s: float = 0.0


_HELD: ContextVar[Slot | None] = ContextVar("telegram_slot_held", default=None)


class SendLimiter:
    def __init__(self, limits: SharedLimits, *, bot_id: int, global_per_s: float = 30,
                 per_chat_interval_s: float = 1.0, group_per_min: float = 20,
                 campaign_share: float = CAMPAIGN_SHARE) -> None:
        self.limits = limits
        self.bucket = f"telegram:{bot_id}"
        self.chat_bucket = f"telegram-chat:{bot_id}"
        self.global_per_s = max(1, int(global_per_s))
        self.per_chat_interval_s = per_chat_interval_s
        self.group_interval_s = 60.0 / group_per_min
        # Publicity looks again a little after alerts do, so a freed token goes to a waiting alert.
        self.campaign = Lane("campaign", slots=max(1, int(self.global_per_s * campaign_share)), wake_delay_s=0.015)

    def interval_s(self, chat_id: int) -> float:
        # Groups (negative ids): 20 a minute, kept as one every 3 s, so any 20 in a row span more than a minute.
        return self.group_interval_s if chat_id < 0 else self.per_chat_interval_s

    @asynccontextmanager
    async def slot(self, chat_id: int, lane: Lane | None = None) -> AsyncIterator[Slot]:
        """Hold a sending slot for one request to `chat_id`: the chat's turn, then a token; send inside."""
        lane = lane or SEND_LANE.get()
        turn = await self.limits.take_turn(self.chat_bucket, chat_id)
        held = Slot(chat_id)
        try:
            token = await self.limits.take_token(self.bucket, size=self.global_per_s, lane=lane)
        except BaseException:
            await self.limits.give_back(turn=turn, turn_hold_s=0.0)
            raise
        previous = _HELD.set(held)
        try:
            async with self.limits.kept_alive([turn, token]):
                yield held
        finally:
            _HELD.reset(previous)
            # Counted from the response: the request has certainly arrived by now.
            await self.limits.give_back(token=token, token_hold_s=1.0, turn=turn,
                                        turn_hold_s=max(self.interval_s(chat_id), held.retry_after_s))

    async def penalise(self, chat_id: int, retry_after_s: float) -> None:
        """Telegram said wait: no replica sends to this chat before then."""
        await self.limits.push_turn(self.chat_bucket, chat_id, hold_s=retry_after_s)


def held_slot(chat_id: int) -> Slot | None:
    """The slot the current task already holds for `chat_id`, if any."""
    held = _HELD.get()
    return held if held is not None and held.chat_id == chat_id else None


class LimitedSending(BaseRequestMiddleware):
    """aiogram request middleware: every sendMessage (alerts and replies alike) goes through the limiter.

    A sender that holds the chat's slot itself (alerts and campaigns record
    their intent inside it) passes straight through; a 429 then pushes the
    chat's turn out and goes back to that sender, which decides. Anything else
    (replies, notices) takes a slot here; a 429 that still comes back (Telegram's
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
        held = held_slot(chat_id)
        if held is not None:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                held.retry_after_s = float(exc.retry_after)  # the slot's release keeps every replica off the chat
                log.warning("bot.send", result="retry_after", retry_after_s=exc.retry_after, chat_id=chat_id)
                raise
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(TelegramRetryAfter), wait=self._wait,
                                           stop=stop_after_attempt(self.max_retries + 1), reraise=True):
            with attempt:
                async with self.limiter.slot(chat_id) as held:
                    try:
                        return await make_request(bot, method)
                    except TelegramRetryAfter as exc:
                        held.retry_after_s = float(exc.retry_after)
                        log.warning("bot.send", result="retry_after", retry_after_s=exc.retry_after,
                                    chat_id=chat_id)
                        raise
        raise AssertionError("unreachable")  # tenacity either returned or re-raised
