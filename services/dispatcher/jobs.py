"""The dispatcher's own jobs: plan timers, visit requests, and results coming back from the bot and the callcenter."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.campaigns.service import job_handlers as campaign_handlers
from services.dispatcher.clues.service import store_clue
from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.tasks import service
from services.dispatcher.visits import flows as visit_flows
from services.dispatcher.visits import service as visits
from shared import contracts
from shared.clock import Clock
from shared.queue.service import ClaimedJob
from shared.queue.worker import Handler, PermanentJobError, RetryLater, Worker

log = structlog.get_logger(__name__)


def make_handlers(*, store: PolicyStore, clock: Clock) -> dict[str, Handler]:
    async def on_timer(session: AsyncSession, job: ClaimedJob) -> None:
        timer = contracts.TaskTimer.of(job)
        task = await service.lock_task(session, timer.task_id)
        if task is None:
            return
        done = await service.run_due_steps(session, task, plan_seq=timer.plan_seq, now=clock.now(), store=store)
        if done:
            log.info("task.steps_run", steps=done)

    async def on_result(session: AsyncSession, job: ClaimedJob) -> None:
        result = contracts.ChannelResult.of(job)
        task = await service.lock_task(session, result.task_id)
        if task is None:
            raise PermanentJobError("result for a task that does not exist")
        outcome = await service.apply_channel_result(session, task, result, now=clock.now(), store=store)
        log.info("task.channel_result", channel=result.channel, result=result.result, applied=outcome)

    async def on_visit(session: AsyncSession, job: ClaimedJob) -> None:
        # The plan's visit step (run_due_steps) asked for officers: the visit the unit's officers see on /field.
        request = contracts.VisitRequest.of(job)
        task = await service.lock_task(session, request.task_id)
        if task is None:
            raise PermanentJobError("visit request for a task that does not exist")
        try:
            await visit_flows.request_visit(session, task, actor="system:dispatcher", note=None,
                                            now=clock.now(), request_attempt=request.attempt)
        except visit_flows.TaskIsClosed:
            log.info("visit.not_needed", why="task closed before the request ran")

    async def on_visit_check(session: AsyncSession, job: ClaimedJob) -> None:
        # Has an officer taken the visit within the tier's time? If not, a supervisor hears of it now.
        check = contracts.VisitClaimCheck.of(job)
        task = await service.lock_task(session, check.task_id)
        if task is None:
            return
        policy = await store.get(session, task.policy_version)
        now = clock.now()
        look_again = await visits.check_claimed(
            session, task, check.visit_id, now=now,
            claim_within_minutes=policy.playbook(task.tier).visit_claim_within_minutes)
        if look_again is not None:  # nothing was written: the job waits (on the clock) until the visit is due
            raise RetryLater((look_again - now).total_seconds(), "the visit's claim time has not come yet",
                             on_clock=True)

    async def on_clue(session: AsyncSession, job: ClaimedJob) -> None:
        clue = contracts.ClueReport.of(job)
        stored = await store_clue(session, clue, now=clock.now())
        log.info("clue.stored" if stored else "clue.already_stored", ref=clue.ref)

    return {contracts.TaskTimer.KIND: Handler(on_timer), contracts.ChannelResult.KIND: Handler(on_result),
            contracts.VisitRequest.KIND: Handler(on_visit), contracts.VisitClaimCheck.KIND: Handler(on_visit_check),
            contracts.ClueReport.KIND: Handler(on_clue),
            **campaign_handlers(clock=clock)}


def make_worker(sessionmaker: async_sessionmaker[AsyncSession], *, store: PolicyStore, clock: Clock,
                database_url: str | None, **options: float) -> Worker:
    return Worker(sessionmaker, queue="dispatcher", handlers=make_handlers(store=store, clock=clock), clock=clock,
                  database_url=database_url, **options)  # type: ignore[arg-type]
