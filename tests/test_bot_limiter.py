"""Telegram's limits kept by every bot replica together: 30 messages in any second per bot, 1 per chat per second,
alerts ahead of publicity; tokens and turns live in PostgreSQL (shared/ratelimit)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest

from services.bot.alerts.limiter import ALERT, HIGH, SendLimiter
from shared.db_roles import service_url
from shared.ratelimit.service import SharedLimits

BOT_ID = 1000000001


@pytest.fixture
async def replicas(db_url: str) -> AsyncIterator[Callable[..., SendLimiter]]:
    """Makes limiters as separate replicas would have them: each its own connections, as the services' role."""
    async with AsyncExitStack() as stack:
        def replica(*, lease_s: float = 6.0, **options: object) -> SendLimiter:
            limits = SharedLimits(service_url(db_url, None), lease_s=lease_s)
            stack.push_async_callback(limits.close)
            return SendLimiter(limits, bot_id=BOT_ID, **options)

        yield replica


def busiest_second(arrivals: list[float]) -> int:
    arrivals = sorted(arrivals)
    return max((sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals), default=0)


async def send_through(limiter: SendLimiter, chat_id: int, arrivals: list[float], **slot: object) -> None:
    """One request: it arrives at a random moment between its start and its response, as over a real network."""
    async with limiter.slot(chat_id, **slot):  # type: ignore[arg-type]
        await asyncio.sleep(random.uniform(0, 0.03))
        arrivals.append(time.monotonic())
        await asyncio.sleep(random.uniform(0, 0.03))


async def test_two_replicas_together_never_exceed_the_bots_rate(replicas) -> None:  # noqa: ANN001
    """Two replicas sending 40 messages each to distinct chats: never more than 20 arrivals in any second, ~4 s."""
    first, second = replicas(global_per_s=20), replicas(global_per_s=20)
    arrivals: list[float] = []
    started = time.monotonic()
    await asyncio.gather(*(send_through(first, 1000 + i, arrivals) for i in range(40)),
                         *(send_through(second, 2000 + i, arrivals) for i in range(40)))
    assert len(arrivals) == 80
    assert busiest_second(arrivals) <= 20
    # 80 at 20 a second: 3 full seconds of waiting at least, and the shared tokens keep it well under double that.
    assert 3.0 <= time.monotonic() - started < 7.0


async def test_one_chat_gets_one_message_a_second_across_replicas(replicas) -> None:  # noqa: ANN001
    """Three messages to one chat from each of two replicas arrive at least a second apart; other chats don't wait."""
    first, second = replicas(), replicas()
    arrivals: list[float] = []
    other: list[float] = []
    started = time.monotonic()
    await asyncio.gather(*(send_through(r, 42, arrivals) for r in (first, second) for _ in range(3)),
                         send_through(second, 43, other))
    arrivals.sort()
    assert min(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) >= 1.0
    assert other[0] - started < 0.5


async def test_a_group_gets_one_message_every_three_seconds(replicas) -> None:  # noqa: ANN001
    """A group chat (negative id) is kept to 20 a minute: two messages from two replicas are 3 s apart."""
    first, second = replicas(), replicas()
    arrivals: list[float] = []
    await asyncio.gather(send_through(first, -100123, arrivals), send_through(second, -100123, arrivals))
    arrivals.sort()
    assert arrivals[1] - arrivals[0] >= 3.0


async def test_a_429_holds_the_chat_for_every_replica(replicas) -> None:  # noqa: ANN001
    """A 429's retry_after seen by one replica keeps the other off that chat until it is over."""
    first, second = replicas(), replicas()
    async with first.slot(77) as held:
        held.retry_after_s = 2.0  # what LimitedSending records on a 429 inside the slot
    started = time.monotonic()
    arrivals: list[float] = []
    await send_through(second, 77, arrivals)
    assert arrivals[0] - started >= 1.8


async def test_a_dead_replicas_tokens_come_back_within_its_lease(replicas) -> None:  # noqa: ANN001
    """A replica that takes every token and dies (never gives them back) blocks the others only for its lease."""
    dead, alive = replicas(global_per_s=5, lease_s=1.5), replicas(global_per_s=5, lease_s=1.5)
    for _ in range(5):  # taken and never released, as by a process killed mid-request
        await dead.limits.take_token(dead.bucket, size=5, lane=ALERT)
    started = time.monotonic()
    arrivals: list[float] = []
    await send_through(alive, 5, arrivals)
    assert 1.0 <= arrivals[0] - started < 3.0


async def test_alerts_get_tokens_while_a_campaign_saturates_its_share(replicas) -> None:  # noqa: ANN001
    """A broadcast on one replica holds at most 20 of 30 tokens; alerts on another go within a second, high first."""
    broadcaster, alerter = replicas(), replicas()
    campaign: list[float] = []
    alert_delays: list[float] = []
    stop = asyncio.Event()

    async def broadcast() -> None:
        chat = 10_000
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            while len(pending) < 60:  # always more campaign sends waiting than its share can take
                chat += 1
                pending.add(asyncio.create_task(send_through(broadcaster, chat, campaign,
                                                             lane=broadcaster.campaign)))
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def alerts() -> None:
        await asyncio.sleep(1.5)  # the broadcast is saturating its share by now
        for i in range(12):
            asked = time.monotonic()
            async with alerter.slot(50_000 + i, HIGH if i % 2 else ALERT):
                alert_delays.append(time.monotonic() - asked)
            await asyncio.sleep(0.15)
        stop.set()

    await asyncio.gather(broadcast(), alerts())
    window = [t for t in campaign if t > min(campaign) + 1.0]
    assert busiest_second(window) <= 20  # publicity never above its share
    assert busiest_second(campaign) >= 15  # ...and it did saturate it
    assert max(alert_delays) < 1.0, alert_delays
