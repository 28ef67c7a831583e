"""Wake-ups inside the sandbox: long polls, calls and control-API waits sleep until something changes."""

from __future__ import annotations

import asyncio
import contextlib


class ChangeSignal:
    """Fire to wake every current waiter; each waiter then re-checks its own condition.

    A fresh Event after every fire, so a waiter that arrives later waits for the next change.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Until the next fire, or `timeout_s` seconds (returns at once when <= 0)."""
        if timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
