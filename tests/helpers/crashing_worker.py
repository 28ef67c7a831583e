"""A dispatcher worker that stops dead in the middle of a job (run as a subprocess by a test).

It runs the real channel-result handler, then - inside the same, still
uncommitted transaction - writes a marker file and sleeps, so the test can
SIGKILL it at exactly that point.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from services.dispatcher.jobs import make_handlers
from services.dispatcher.policy.service import PolicyStore, load_policy
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker
from shared.queue.worker import Handler, Worker
from shared.settings import CommonSettings


async def main(db_url: str, marker: Path, lease_s: float) -> None:
    engine = make_engine(db_url, pool_size=2, audit_key=CommonSettings().audit_secret())
    sessionmaker = make_sessionmaker(engine)
    clock = Clock()
    handlers = make_handlers(store=PolicyStore(load_policy(None)), clock=clock)
    real = handlers["task.channel_result"].fn

    async def handler_then_hang(session, job) -> None:  # noqa: ANN001
        await real(session, job)  # type: ignore[call-arg]
        marker.write_text(str(job.id))
        time.sleep(120)  # the whole process freezes mid-transaction until it is killed

    # Only the result job: the task's timers (due by the wall clock) would otherwise race it in the same batch.
    worker = Worker(sessionmaker, queue="dispatcher", handlers={"task.channel_result": Handler(handler_then_hang)},
                    clock=clock, lease_s=lease_s)
    await worker.run_once()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])))
