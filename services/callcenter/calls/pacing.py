"""Pacing new calls per Twilio account across every callcenter replica (Twilio queues calls above 1/s by default).

The next start lives in PostgreSQL (shared/ratelimit, a `rate_paces` row per
account): each dial moves it on by the interval in one statement and sleeps
until its own start, so two replicas together keep the account's rate, where
each used to keep it alone (2 calls/s against 1 allowed).

Not ordered by urgency: a start is handed out when asked for, and with the
default 1 call/s and 16 dials at once an emergency may wait behind up to ~16 s
of queued starts. The callcenter's job queue already claims emergencies and
high-tier calls first, which is where the ordering happens.
"""

from __future__ import annotations

from shared.ratelimit.service import SharedLimits


def pacing_interval_s(calls_per_s: float, margin_fraction: float = 0.02) -> float:
    """Seconds between starts: 1/rate plus a margin proportional to it.

    The margin absorbs network jitter: requests spaced exactly 1/rate apart can
    reach Twilio closer together than that (a new connection's first request
    lands later than the next), and would then be queued or refused. A fixed
    50 ms capped 10 calls/s at 6.67/s.
    """
    return 1.0 / max(calls_per_s, 0.001) * (1 + margin_fraction)


class CallPacer:
    """Starts at least `interval_s` apart for one account, shared by every replica."""

    def __init__(self, limits: SharedLimits, *, key: str, calls_per_s: float, margin_fraction: float = 0.02) -> None:
        self.limits = limits
        self.key = f"twilio:{key}"
        self.interval_s = pacing_interval_s(calls_per_s, margin_fraction)

    async def acquire(self) -> None:
        await self.limits.pace(self.key, interval_s=self.interval_s)
