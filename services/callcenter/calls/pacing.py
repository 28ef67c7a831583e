"""Pacing new calls per caller ID (Twilio queues calls above 1 per second per account by default)."""

from __future__ import annotations

import asyncio
import time


class CallPacer:
    """Hands out start times at least 1/calls_per_s apart (plus a margin); each caller waits for its own slot.

    The margin absorbs network jitter: requests spaced exactly 1/rate apart can
    reach Twilio closer together than that (a new connection's first request
    lands later than the next), and would then be queued or refused.
    """

    def __init__(self, calls_per_s: float, clock=time.monotonic, margin_fraction: float = 0.02) -> None:  # noqa: ANN001
        # A margin proportional to the interval: a fixed 50 ms capped 10 calls/s at 6.67/s.
        base = 1.0 / max(calls_per_s, 0.001)
        self.interval_s = base * (1 + margin_fraction)
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
        if slot > now:
            await asyncio.sleep(slot - now)
