"""The dispatcher's own jobs: plan timers, and results coming back from the bot and the callcenter."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.campaigns.service import job_handlers as campaign_handlers
from services.dispatcher.clues.service import store_clue
from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.tasks import plans, service
from shared.clock import Clock
from shared.queue.service import ClaimedJob
from shared.queue.worker import Handler, PermanentJobError, Worker

log = structlog.get_logger(__name__)
CLUE_KIND = "clue.report"  # from the bot's /report dialogue


def make_handlers(*, store: PolicyStore, clock: Clock) -> dict[str, Handler]:
    async def on_timer(session: AsyncSession, job: ClaimedJob) -> None:
        task = await service.lock_task(session, _task_id(job))
        if task is None:
            return
        done = await service.run_due_steps(session, task, plan_seq=int(job.payload["plan_seq"]), now=clock.now(),
                                           store=store)
        if done:
            log.info("task.steps_run", steps=done)

    async def on_result(session: AsyncSession, job: ClaimedJob) -> None:
        task = await service.lock_task(session, _task_id(job))
        if task is None:
            raise PermanentJobError("result for a task that does not exist")
        outcome = await service.apply_channel_result(session, task, job.payload, now=clock.now(), store=store)
        log.info("task.channel_result", channel=job.payload.get("channel"), result=job.payload.get("result"),
                 applied=outcome)

    async def on_clue(session: AsyncSession, job: ClaimedJob) -> None:
        if not job.payload.get("ref"):
            raise PermanentJobError("clue report without a reference")
        stored = await store_clue(session, job.payload, now=clock.now())
        log.info("clue.stored" if stored else "clue.already_stored", ref=job.payload["ref"])

    return {plans.TIMER_KIND: Handler(on_timer), plans.RESULT_KIND: Handler(on_result),
            CLUE_KIND: Handler(on_clue), **campaign_handlers(clock=clock)}


def _task_id(job: ClaimedJob) -> uuid.UUID:
    try:
        return uuid.UUID(str(job.payload["task_id"]))
    except (KeyError, ValueError):
        raise PermanentJobError("job payload has no valid task_id") from None


def make_worker(sessionmaker: async_sessionmaker[AsyncSession], *, store: PolicyStore, clock: Clock,
                database_url: str | None, **options: float) -> Worker:
    return Worker(sessionmaker, queue="dispatcher", handlers=make_handlers(store=store, clock=clock), clock=clock,
                  database_url=database_url, **options)  # type: ignore[arg-type]
