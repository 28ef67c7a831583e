"""The case file's plan: the task's playbook laid out as steps, each with its due time, its owner and the time left.

Read-only and plain data (the console renders it, tests read it). The plan is the policy version the task
started with (its snapshot), laid out from the current plan's start (plans.py, policy.service.plan_steps), plus
what is queued right now for the task (retries, call-backs, a waiting operator call), read from the queue, so
a supervisor sees the same next step the timers will take.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.emergencies.models import PaymentStop
from services.dispatcher.policy.service import LoadedPolicy, PolicyStore, first_channels, plan_steps
from services.dispatcher.tasks.models import CLOSED, Task
from services.dispatcher.tasks.plans import CHANNEL_JOBS
from services.dispatcher.visits.models import LIVE, Visit
from shared.queue import service as queue

# Who carries out each kind of step (the catalogue's plan.owner.* words).
CHANNEL_OWNER = {"bot_alert": "bot", "auto_call": "auto_call", "operator_call": "seats", "visit": "officers"}
JOB_CHANNEL = {job.KIND: channel for channel, job in CHANNEL_JOBS.items()}

# Step states, in the catalogue as plan.state.*:
DONE = "done"            # carried out (a channel: its attempt was made)
SKIPPED = "skipped"      # its moment came and it was not needed (no chat bound, citizen already reached)
NEXT = "next"            # the earliest step still to come
PLANNED = "planned"      # later
OVERDUE = "overdue"      # its moment passed and it is not done yet (the timer is about to run it)
WAITING = "waiting"      # queued now, for a person or a channel to take
IN_HAND = "in_hand"      # someone holds it right now (a seat on the call, an officer on the way)
NOT_NEEDED = "not_needed"  # the task closed, or an emergency replaced the automated contact


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One step of the plan."""

    step: str                 # "channel", "queued", "retry", "visit", "escalate", "deadline", "payment_stop"
    channel: str | None       # bot_alert, auto_call, operator_call, visit
    owner: str                # plan.owner.*: bot, auto_call, seats, officers, supervisor, unit
    unit: str | None          # the unit whose people do it (seats, officers, the handling unit)
    due_at: datetime | None
    state: str
    left_s: int | None        # seconds until due_at (negative: overdue); None once settled
    attempt: int | None = None
    max_attempts: int | None = None


def _left(due_at: datetime | None, now: datetime) -> int | None:
    return None if due_at is None else int((due_at - now).total_seconds())


def lay_out(task: Task, policy: LoadedPolicy, *, now: datetime, waiting: list[tuple[str, int, datetime, bool]],
            visit_status: str | None = None, stop_status: str | None = None) -> list[PlanItem]:
    """The plan of `task` (pure): playbook steps with their state, then what is queued now.

    `waiting`: the task's contact jobs still to run, as (channel, attempt, run_at, held by someone);
    `visit_status`: its live visit's status, if any; `stop_status`: its payment stop's, for an emergency.
    """
    playbook = policy.playbook(task.tier)
    steps_done = set(task.steps_done or [])
    attempts = {k: v for k, v in (task.attempts or {}).items() if isinstance(v, int)}
    closed, emergency = task.status == CLOSED, task.emergency_at is not None
    unit = task.assigned_unit or task.region_code
    items: list[PlanItem] = []

    def pending(due_at: datetime) -> str:
        return OVERDUE if due_at <= now else PLANNED

    # An operator call the plan started and no seat has finished yet is still that step (waiting for a seat, or
    # in one's hands), not a second row; later ones (a call-back, a reassignment) get rows of their own below.
    seats_queue = {attempt: held for channel, attempt, _, held in waiting if channel == "operator_call"}
    merged: set[int] = set()

    def started(channel: str, tried: int) -> str:
        if channel == "operator_call" and tried in seats_queue:
            merged.add(tried)
            return IN_HAND if seats_queue[tried] else WAITING
        return DONE

    # The channels of the plan's first moment, then the later ones.
    for channel in first_channels(playbook):
        tried = attempts.get(channel, 0)
        if tried:
            state = started(channel, tried)
        elif channel == "bot_alert" and not task.has_chat:
            state = SKIPPED
        else:
            state = NOT_NEEDED if closed or emergency else pending(task.plan_started_at)
        items.append(PlanItem("channel", channel, CHANNEL_OWNER[channel], unit if channel == "operator_call" else None,
                              task.plan_started_at, state, None if state != PLANNED else _left(task.plan_started_at, now),
                              attempt=tried or None,
                              max_attempts=playbook.auto_call.max_attempts if channel == "auto_call" else None))
    for step in plan_steps(playbook, plan_started_at=task.plan_started_at, due_at=task.due_at):
        name = step.name
        if name.startswith("channel:"):
            channel = name.removeprefix("channel:")
            tried = attempts.get(channel, 0)
            if name in steps_done or tried:
                state = started(channel, tried) if tried else SKIPPED
            else:
                state = NOT_NEEDED if closed else pending(step.at)
            items.append(PlanItem("channel", channel, CHANNEL_OWNER[channel],
                                  unit if channel == "operator_call" else None, step.at, state,
                                  _left(step.at, now) if state in (PLANNED, OVERDUE, WAITING, IN_HAND) else None,
                                  attempt=tried or None,
                                  max_attempts=playbook.auto_call.max_attempts if channel == "auto_call" else None))
        elif name == "visit":
            if visit_status is not None:
                state = IN_HAND if visit_status == "claimed" else WAITING
            elif name in steps_done:
                state = DONE if attempts.get("visit") else SKIPPED  # skipped: the citizen was reached first
            else:
                state = NOT_NEEDED if closed else pending(step.at)
            items.append(PlanItem("visit", "visit", "officers", unit, step.at, state,
                                  _left(step.at, now) if state in (PLANNED, OVERDUE, WAITING, IN_HAND) else None))
        elif name == "escalate":
            state = DONE if task.escalated_at is not None else (NOT_NEEDED if closed else pending(step.at))
            items.append(PlanItem("escalate", None, "supervisor", None, step.at, state,
                                  _left(step.at, now) if state in (PLANNED, OVERDUE) else None))
        # "breach" is the deadline, below: the step every other step works towards.
    for channel, attempt, run_at, held in waiting:
        if channel == "visit":
            continue  # the visit request becomes the visit: shown on the visit step
        if channel != "operator_call" and run_at <= now and not held:
            continue  # an alert or robocall being sent this moment: its step above says it started
        if channel == "operator_call" and attempt in merged:
            continue
        state = IN_HAND if held else (WAITING if run_at <= now else PLANNED)
        items.append(PlanItem("retry" if attempt > 1 else "queued", channel, CHANNEL_OWNER[channel],
                              unit if channel == "operator_call" else None, run_at, state, _left(run_at, now),
                              attempt=attempt,
                              max_attempts=playbook.auto_call.max_attempts if channel == "auto_call" else None))
    if emergency:
        settled = stop_status in ("confirmed", "failed")
        items.append(PlanItem("payment_stop", None, "supervisor", None, task.emergency_at,
                              DONE if settled else (NOT_NEEDED if closed else WAITING), None))
    # The deadline: handled and reported back by then (见面处置并反馈), by the handling unit.
    if closed:
        deadline_state = DONE
    else:
        deadline_state = OVERDUE if task.due_at <= now else PLANNED
    items.append(PlanItem("deadline", None, "unit", unit, task.due_at, deadline_state,
                          None if closed else _left(task.due_at, now)))
    items.sort(key=lambda i: (i.due_at or task.plan_started_at, i.step == "deadline"))
    # The earliest step still to come is the next one.
    for index, item in enumerate(items):
        if item.state == PLANNED:
            items[index] = replace(item, state=NEXT)
            break
    return items


async def task_plan(session: AsyncSession, task: Task, *, store: PolicyStore, now: datetime) -> list[PlanItem]:
    """The plan of `task` now: its policy version's playbook, its queued contact jobs, its visit and payment stop."""
    policy = await store.get(session, task.policy_version)
    jobs = await queue.waiting_task_jobs(session, task_id=task.id, kinds=list(JOB_CHANNEL))
    waiting = [(JOB_CHANNEL[job.kind], int(job.payload.get("attempt") or 1), job.run_at, status == "running")
               for job, status, _ in jobs]
    visit = (await session.execute(
        Visit.__table__.select().where(Visit.task_id == task.id, Visit.status.in_(LIVE)))).first()
    stop = await session.get(PaymentStop, task.id) if task.emergency_at is not None else None
    return lay_out(task, policy, now=now, waiting=waiting, visit_status=visit.status if visit else None,
                   stop_status=stop.status if stop else None)


def time_left(task: Task, now: datetime) -> timedelta | None:
    """Until the task's deadline (negative: past it); None once it is closed."""
    return None if task.status == CLOSED else task.due_at - now
