"""simpy's event list, stepped from the asyncio loop in real time on the services' fast clock.

Why not `simpy.rt.RealtimeEnvironment` in a thread: the agents' every action is an HTTP request, and those
run on asyncio; a simpy thread would hand each one across threads and block on its answer. Instead one loop
does both: simulated time is *defined* as the services' clock (`SHOUHU_TIME_SCALE`, shared epoch) minus the
day's start, the driver runs simpy up to that time, then sleeps until the next simpy event is due; an HTTP
request is an asyncio task whose completion succeeds a simpy event at the moment it answers. No locks: simpy
and the HTTP tasks only ever run on this one thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime, timedelta
from typing import Any

import simpy

Process = Generator[Any, Any, Any]


class Driver:
    """Simulated seconds = the services' clock seconds since `day_start` (real seconds x scale)."""

    def __init__(self, *, scale: float, epoch: datetime, day_start: datetime, max_sleep_s: float = 0.05) -> None:
        self.scale = scale
        self.epoch = epoch
        self.day_start = day_start
        self.max_sleep_s = max_sleep_s
        self.env = simpy.Environment(initial_time=max(0.0, self.clock_s()))
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.wall_s = 0.0  # real seconds the day took
        self.max_lag_s = 0.0

    # ---- the services' clock ------------------------------------------------------------------------------

    def service_now(self) -> datetime:
        """What the services' ScaledClock reads now (the same formula: epoch + (real - epoch) * scale)."""
        if self.scale == 1:
            return datetime.now(self.epoch.tzinfo)
        return self.epoch + timedelta(seconds=(time.time() - self.epoch.timestamp()) * self.scale)

    def clock_s(self) -> float:
        return (self.service_now() - self.day_start).total_seconds()

    def at(self, sim_s: float) -> datetime:
        """The services' time of a simulated second (for callback_at, met_at ...)."""
        return self.day_start + timedelta(seconds=sim_s)

    # ---- HTTP work as simpy events ------------------------------------------------------------------------

    def call(self, make: Callable[[], Awaitable[Any]]) -> simpy.Event:
        """Start `make()` on the loop; the returned event succeeds with its result (or the exception, as a
        value: agents check for it, so that one failed request never stops the whole simulation)."""
        event = self.env.event()
        task = asyncio.ensure_future(make())
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            self.catch_up()
            exc = t.exception() if not t.cancelled() else asyncio.CancelledError()
            event.succeed(exc if exc is not None else t.result())

        task.add_done_callback(done)
        return event

    def process(self, gen: Process, what: str) -> simpy.Process:
        """An agent's process; an exception in it is recorded, not raised through the driver."""

        def guarded() -> Process:
            try:
                return (yield from gen)
            except Exception as exc:  # noqa: BLE001 - counted and reported: one agent's bug must not end the day
                self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
                return None

        return self.env.process(guarded())

    # ---- the loop -----------------------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Run simpy up to the services' now (and anything due at the current instant)."""
        target = self.clock_s()
        if target > self.env.now:
            self.env.run(until=target)
        while self.env.peek() <= self.env.now:
            self.env.step()

    async def run(self, until_s: float) -> None:
        while (ahead_s := -self.clock_s()) > 0:  # the day has not started on the services' clock yet
            await asyncio.sleep(min(1.0, ahead_s / self.scale))
        started = time.monotonic()
        while True:
            self.catch_up()
            # How far the agents' work lags the clock: a callback that runs late stamps its event late.
            self.max_lag_s = max(self.max_lag_s, self.clock_s() - self.env.now)
            if self.env.now >= until_s:
                self.wall_s = time.monotonic() - started
                return
            next_s = min(self.env.peek(), until_s)
            await asyncio.sleep(min(self.max_sleep_s, max(0.0, (next_s - self.env.now) / self.scale)))

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Wait for the HTTP requests still in flight (bounded)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
