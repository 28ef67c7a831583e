"""The bot's own rate limiter keeps Telegram's limits: 30 messages in any second, 1 per chat per second."""

from __future__ import annotations

import asyncio
import time

from services.bot.alerts.limiter import SendLimiter


async def test_no_second_holds_more_than_the_global_limit_and_throughput_stays_high() -> None:
    """60 messages to 60 chats at a limit of 20/s: never more than 20 in any second, done in about 2 s."""
    limiter = SendLimiter(global_per_s=20)
    sent: list[float] = []

    async def send(chat: int) -> None:
        async with limiter.slot(chat):
            await asyncio.sleep(0.02)  # the request in flight
            sent.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(send(c) for c in range(60)))
    sent.sort()
    assert max(sum(1 for t in sent if s <= t < s + 1.0) for s in sent) <= 20
    assert time.monotonic() - started < 2.6


async def test_one_chat_waits_a_second_without_holding_up_the_others() -> None:
    """Two messages to one chat are a second apart; a message to another chat is not delayed by that wait."""
    limiter = SendLimiter(global_per_s=30)
    times: dict[str, float] = {}

    async def send(label: str, chat: int) -> None:
        async with limiter.slot(chat):
            times[label] = time.monotonic()

    started = time.monotonic()
    await send("first", 1)
    await asyncio.gather(send("second", 1), send("other", 2))
    assert times["second"] - times["first"] >= 1.0
    assert times["other"] - started < 0.2
