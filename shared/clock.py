"""The one source of "now" for domain code, so tests can move time instead of sleeping.

Two kinds of interval meet this clock. Domain intervals (a task's 2 h
deadline, a playbook's retry delay, a visit's due time) are measured on it, so a
fast clock (`ScaledClock`, `SHOUHU_TIME_SCALE`) compresses them: a demo day
passes in minutes. Infrastructure intervals are real seconds (a job's lease
and heartbeat, a provider's rate limit, a request in flight at Twilio, a person's
wrap-up): code that adds one to `now` converts it first with `real_s`, so a
60x clock does not let a 10 s lease lapse in a sixth of a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# The centre's local time: what people read on pages, call windows, "today" in reports.
# One constant for the whole project; a policy file may name another zone for its call windows.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# Where a ScaledClock meets real time when no SHOUHU_TIME_EPOCH is given: a fixed moment, so services
# started separately still agree on "now". `shouhu up` and `shouhu demo` set the epoch to their start.
DEFAULT_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """Wall-clock time in UTC."""

    # Clock seconds per real second: 1 for wall time and for clocks moved by hand.
    scale: float = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def real_s(self, seconds: float) -> float:
        """The clock seconds that pass in `seconds` real seconds (a lease, a timeout added to `now`)."""
        return seconds * self.scale

    def real_delta(self, seconds: float) -> timedelta:
        """`real_s` as a timedelta, to add to `now`."""
        return timedelta(seconds=self.real_s(seconds))

    def to_real_s(self, clock_seconds: float) -> float:
        """The real seconds it takes this clock to move `clock_seconds` (how long to sleep for it)."""
        return clock_seconds / self.scale


class ScaledClock(Clock):
    """A clock `scale` times faster than real time: now = epoch + (real now - epoch) * scale.

    Every process given the same epoch and scale reads the same "now" (to the
    hosts' clock skew times the scale), so the dispatcher, bot and callcenter
    agree on deadlines without talking to each other.
    """

    def __init__(self, scale: float, epoch: datetime | None = None, *,
                 real_time: Callable[[], float] = time.time) -> None:
        if scale <= 0:
            raise ValueError("the time scale must be positive")
        self.scale = float(scale)
        epoch = epoch or DEFAULT_EPOCH
        if epoch.tzinfo is None:
            epoch = epoch.replace(tzinfo=UTC)
        self.epoch = epoch
        self._epoch_ts = epoch.timestamp()
        # Real time as seconds since 1970 (time.time); tests pass their own to move real time without waiting.
        self._real_time = real_time

    def now(self) -> datetime:
        elapsed_s = (self._real_time() - self._epoch_ts) * self.scale
        return self.epoch + timedelta(seconds=elapsed_s)

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale}, epoch={self.epoch.isoformat()})"


class FrozenClock(Clock):
    """A clock that only moves when told to (tests and simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def make_clock(scale: float = 1.0, epoch: datetime | None = None) -> Clock:
    """Wall time at scale 1, else a ScaledClock."""
    return Clock() if scale == 1 else ScaledClock(scale, epoch)
