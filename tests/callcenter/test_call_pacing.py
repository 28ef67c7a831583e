"""New calls are paced per Twilio account across every callcenter replica (the next start lives in PostgreSQL)."""

from __future__ import annotations

import asyncio
import time

from services.callcenter.calls.pacing import CallPacer
from shared.db_roles import service_url
from shared.ratelimit.service import SharedLimits


async def test_two_replicas_together_keep_the_accounts_calls_per_second(db_url: str) -> None:
    """Two replicas' pacers at 4 calls/s, 8 dials each at once: starts 0.255 s apart, any 5 in a row span a second."""
    replicas = [SharedLimits(service_url(db_url, None)) for _ in range(2)]
    try:
        pacers = [CallPacer(limits, key="AC123", calls_per_s=4) for limits in replicas]
        other = CallPacer(replicas[0], key="AC999", calls_per_s=4)
        starts: list[float] = []
        other_starts: list[float] = []

        async def dial(pacer: CallPacer, into: list[float]) -> None:
            async with pacer.slot():
                into.append(time.monotonic())

        began = time.monotonic()
        await asyncio.gather(*(dial(p, starts) for p in pacers for _ in range(8)), dial(other, other_starts))
        starts.sort()
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        # 0.255 s apart on the database's clock. What is timed here is each dial's local wake-up after its sleep
        # and the token's round trip, which a loaded machine delays: one late wake-up (0.17 s was seen in CI)
        # lengthens the gap before it and shortens the one after by as much. So: two gaps in a row still add up
        # to about two intervals, and no start ever comes on top of another.
        assert min(a + b for a, b in zip(gaps, gaps[1:], strict=False)) >= 2 * 0.255 - 0.1, gaps
        assert min(gaps) >= 0.05, gaps
        # 4 intervals are 1.02 s: a few ms of wake-up jitter aside, no second holds 5 starts.
        assert min(b - a for a, b in zip(starts, starts[4:], strict=False)) >= 0.97
        assert 15 * 0.255 - 0.1 <= starts[-1] - starts[0] < 15 * 0.255 + 1.5
        assert other_starts[0] - began < 0.5  # another account has a pace of its own
    finally:
        for limits in replicas:
            await limits.close()


async def test_arrivals_never_exceed_the_rate_in_any_second_when_requests_are_slow_then_fast(db_url: str) -> None:
    """At 2 calls/s, a slow request followed by fast ones would put 3 arrivals in one second if starts were only
    spaced; the token, counted from each answer, keeps every sliding second at 2 across two replicas."""
    replicas = [SharedLimits(service_url(db_url, None)) for _ in range(2)]
    try:
        pacers = [CallPacer(limits, key="AC-slow-fast", calls_per_s=2) for limits in replicas]
        arrivals: list[float] = []
        started = 0

        async def dial(pacer: CallPacer) -> None:
            nonlocal started
            async with pacer.slot():
                latency_s = 0.45 if started % 3 == 0 else 0.0  # one request in three takes its time to arrive
                started += 1
                await asyncio.sleep(latency_s)
                arrivals.append(time.monotonic())  # what Twilio counts; the answer follows at once

        await asyncio.gather(*(dial(p) for p in pacers for _ in range(5)))
        arrivals.sort()
        assert len(arrivals) == 10
        # Any three consecutive arrivals span more than a second (a little under, for the local clock's wake-ups).
        assert min(c - a for a, c in zip(arrivals, arrivals[2:], strict=False)) >= 0.98, arrivals
    finally:
        for limits in replicas:
            await limits.close()
