"""What runs on a timer for the seats: the end of wrap-ups nobody has looked at since they ran out."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callcenter.seats.service import end_wrap_ups
from shared.clock import Clock
from shared.db import database_unavailable, transaction

log = structlog.get_logger(__name__)


class WrapUpSweep:
    """Every `interval_s`, seats whose wrap-up is over become available (claims and the console end a seat's own
    wrap-up when they read it; this covers the seats nobody reads, so a supervisor never sees one stuck)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock, interval_s: float) -> None:
        self.sessionmaker, self.clock, self.interval_s = sessionmaker, clock, interval_s
        self._stop = asyncio.Event()

    async def sweep(self) -> int:
        async with transaction(self.sessionmaker) as session:
            return await end_wrap_ups(session, now=self.clock.now())

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                ended = await self.sweep()
                if ended:
                    log.info("seats.wrap_up_ended", seats=ended)
            except Exception as exc:  # the database away for a moment: the next round catches up
                log.warning("seats.wrap_up_sweep_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                            unavailable=database_unavailable(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)

    def stop(self) -> None:
        self._stop.set()
