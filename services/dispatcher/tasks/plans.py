"""Pure planning: which channel jobs and timers a task's playbook calls for, at which moments.

These functions touch no database; ingest (hot path, plain rows) and the
timer/feedback handlers (ORM rows) both go through them, so a plan is decided
the same way wherever it starts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.dispatcher.policy.service import LoadedPolicy, PlanStep, plan_steps, within_call_window
from shared import contracts
from shared.contracts import CALL_CHANNELS, PRIORITY
from shared.queue.service import NewJob

# Each channel's job (its type names its kind and queue). The bot and the callcenter consume
# theirs; the visit request stays in the dispatcher's own queue.
CHANNEL_JOBS: dict[str, type[contracts.ContactRequest]] = {
    "bot_alert": contracts.SendAlert,
    "auto_call": contracts.PlaceCall,
    "operator_call": contracts.OperatorCall,
    "visit": contracts.VisitRequest,
}
TIMER_KIND = contracts.TaskTimer.KIND
RESULT_KIND = contracts.ChannelResult.KIND


@dataclass(slots=True)
class PlanState:
    """The part of a task that planning reads and writes."""

    task_id: uuid.UUID
    case_id: uuid.UUID
    phone: str
    region_code: str
    fraud_type: str
    tier: str
    plan_started_at: datetime
    plan_seq: int
    due_at: datetime
    has_chat: bool
    steps_done: list[str] = field(default_factory=list)
    attempts: dict[str, Any] = field(default_factory=dict)
    assigned_unit: str | None = None  # handed to another unit by a supervisor: its seats claim the calls


def channel_job(state: PlanState, channel: str, *, run_at: datetime, emergency: bool = False,
                reason: str = "", policy: LoadedPolicy | None = None, unit: str | None = None,
                priority: int | None = None) -> NewJob:
    """One numbered attempt on a channel; the number makes the attempt idempotent downstream.

    An operator call is claimed by people: it carries its unit (`unit`, else the task's region)
    and the task's deadline, which order the seats' queue after its priority. An automated
    call carries the tier's call window (from `policy`).
    """
    attempt = int(state.attempts.get(channel, 0)) + 1
    state.attempts[channel] = attempt
    fields = dict(task_id=state.task_id, case_id=state.case_id, channel=channel, attempt=attempt, tier=state.tier,
                  phone=state.phone, region_code=state.region_code, fraud_type=state.fraud_type, due_at=state.due_at,
                  emergency=emergency, reason=reason)
    if channel == "auto_call" and policy is not None:
        fields["call_window"] = policy.call_window(state.tier)
    # trusted (model_construct, cheaper): the fields are the dispatcher's own, already valid; this runs per
    # record at ingest.
    payload = CHANNEL_JOBS[channel].trusted(**fields)
    people_claim = channel == "operator_call"
    if priority is None:
        priority = PRIORITY["emergency"] if emergency else PRIORITY[state.tier]
    return payload.job(run_at=run_at, task_id=state.task_id, priority=priority,
                       dedupe_key=f"{channel}:{state.task_id}:{attempt}",
                       scope=(unit or state.assigned_unit or state.region_code) if people_claim else None,
                       due_at=state.due_at if people_claim else None)


def call_time(policy: LoadedPolicy, state: PlanState, channel: str, when: datetime) -> datetime:
    """Calls respect the tier's call window (local time); other channels go at once."""
    if channel in CALL_CHANNELS:
        return within_call_window(policy.playbook(state.tier), when, policy.tz)
    return when


def next_step(policy: LoadedPolicy, state: PlanState) -> PlanStep | None:
    deadline = timedelta(minutes=policy.playbook(state.tier).deadline_minutes)
    if state.due_at - state.plan_started_at == deadline:
        # A fresh plan (the common case at ingest): its step offsets were worked out at policy load.
        for name, offset in policy.fresh_plan_offsets[state.tier]:
            if name not in state.steps_done:
                return PlanStep(name, state.plan_started_at + offset)
        return None
    for step in plan_steps(policy.playbook(state.tier), plan_started_at=state.plan_started_at, due_at=state.due_at):
        if step.name not in state.steps_done:
            return step
    return None


def timer_job(state: PlanState, step: PlanStep) -> NewJob:
    timer = contracts.TaskTimer.trusted(task_id=state.task_id, plan_seq=state.plan_seq, step=step.name)
    return timer.job(run_at=step.at, task_id=state.task_id, priority=PRIORITY["timer"],
                     dedupe_key=f"timer:{state.task_id}:{state.plan_seq}:{step.name}")


def start_plan(policy: LoadedPolicy, state: PlanState, *, now: datetime) -> tuple[list[NewJob], list[str]]:
    """The first moment of a plan: the playbook's immediate channels, and the timer for what comes next.

    A citizen with no bound chat gets no bot alert; if that leaves no immediate
    channel at all, the playbook's first call channel starts now instead.
    Returns the jobs and human-readable notes for the audit log.
    """
    playbook = policy.playbook(state.tier)
    channels = list(policy.first_channels[state.tier])
    notes: list[str] = []
    if "bot_alert" in channels and not state.has_chat:
        channels.remove("bot_alert")
        notes.append("no bound Telegram chat: bot alert skipped")
        if not channels:
            later = next((c.channel for c in playbook.channels if c.channel in CALL_CHANNELS), None)
            if later:
                channels.append(later)
                state.steps_done.append(f"channel:{later}")
                notes.append(f"{later} started at once instead")
    jobs = [channel_job(state, ch, run_at=call_time(policy, state, ch, now), reason="plan start", policy=policy)
            for ch in channels]
    step = next_step(policy, state)
    if step is not None:
        jobs.append(timer_job(state, step))
    return jobs, notes


def replan(policy: LoadedPolicy, state: PlanState, *, new_tier: str, now: datetime) -> None:
    """A raised tier starts the new tier's plan now, with its deadline pulled in (never pushed out)."""
    state.tier = new_tier
    state.plan_started_at = now
    state.plan_seq += 1
    state.steps_done = []
    deadline = now + timedelta(minutes=policy.playbook(new_tier).deadline_minutes)
    state.due_at = min(state.due_at, deadline)
