"""Pacing new calls per Twilio account across every callcenter replica (Twilio queues calls above 1/s by default).

Two rules, both kept in PostgreSQL (shared/ratelimit) so that every replica
keeps them together, where each used to keep them alone (2 calls/s against 1
allowed):

- spaced starts: the next start (a `rate_paces` row per account) moves on by
  the interval in one statement, and each dial sleeps until its own start;
- counted arrivals: a dial holds one of the account's `floor(rate)` tokens
  (`rate_tokens`) from before its request until `tokens / rate` seconds after
  Twilio's answer. Spacing alone does not bound what *arrives* in a second:
  starts 0.51 s apart reached the sandbox 3 in one second at 2 calls/s (a slow
  request followed by a fast one; `shouhu bench replicas`). A request arrives
  before its answer, so with the token any `tokens + 1` consecutive arrivals
  span more than a second, whatever the network does, as for Telegram
  (services/bot/alerts/limiter.py).

Not ordered by urgency: a start is handed out when asked for, and with the
default 1 call/s and 16 dials at once an emergency may wait behind up to ~16 s
of queued starts. The callcenter's job queue already claims emergencies and
high-tier calls first, which is where the ordering happens.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.ratelimit.service import Lane, SharedLimits

CALLS_LANE = Lane("calls")


def pacing_interval_s(calls_per_s: float, margin_fraction: float = 0.02) -> float:
    """Seconds between starts: 1/rate plus a margin proportional to it.

    The margin absorbs network jitter: requests spaced exactly 1/rate apart can
    reach Twilio closer together than that (a new connection's first request
    lands later than the next), and would then be queued or refused. A fixed
    50 ms capped 10 calls/s at 6.67/s.
    """
    return 1.0 / max(calls_per_s, 0.001) * (1 + margin_fraction)


class CallPacer:
    """Starts at least `interval_s` apart and at most `tokens` arrivals a second, for one account, on every replica."""

    def __init__(self, limits: SharedLimits, *, key: str, calls_per_s: float, margin_fraction: float = 0.02) -> None:
        self.limits = limits
        self.key = f"twilio:{key}"
        self.interval_s = pacing_interval_s(calls_per_s, margin_fraction)
        # 2 calls/s: 2 tokens, each free again 1 s after its answer; 0.5/s: 1 token, free 2 s after.
        self.tokens = max(1, math.floor(calls_per_s))
        self.token_hold_s = self.tokens / max(calls_per_s, 0.001)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for this dial's start and a token; make the request inside; the token is counted from the answer."""
        await self.limits.pace(self.key, interval_s=self.interval_s)
        token = await self.limits.take_token(self.key, size=self.tokens, lane=CALLS_LANE)
        try:
            async with self.limits.kept_alive([token]):  # a slow request must not lose its token mid-flight
                yield
        finally:
            await self.limits.give_back(token=token, token_hold_s=self.token_hold_s)
