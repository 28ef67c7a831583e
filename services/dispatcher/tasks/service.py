"""The task state machine: feedback, emergencies, timers and channel results. Callers own the transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.cases import models as case_models
from services.dispatcher.cases.models import Case
from services.dispatcher.emergencies.models import PaymentStop
from services.dispatcher.policy.service import LoadedPolicy, PolicyStore, plan_steps
from services.dispatcher.tasks import plans
from services.dispatcher.tasks.models import CLOSED, IN_PROGRESS, Task
from services.dispatcher.visits import service as visits
from shared import contracts
from shared.audit import service as audit
from shared.auth.service import Principal
from shared.contracts import CALL_FAILURES, DISPOSITION_OUTCOMES, NEVER_CLOSES_EMERGENCY, OUTCOMES, PRIORITY
from shared.metrics import TASK_EVENTS, TASKS_CLOSED
from shared.queue import service as queue
from shared.queue.service import NewJob

log = structlog.get_logger(__name__)

# Outcomes that end the task. `loss_reported` first opens an emergency; see apply_feedback.
FINAL_OUTCOMES = set(OUTCOMES) - {"loss_reported"}
AUTOMATED_CHANNEL_KINDS = [contracts.SendAlert.KIND, contracts.PlaceCall.KIND]
# In a task's plan state (attempts): why the callcenter may not robocall this citizen (their number's country).
NO_AUTO_CALL = "no_auto_call"


class TaskClosed(Exception):
    def __init__(self, outcome: str | None) -> None:
        super().__init__(f"the task is already closed with outcome '{outcome}'")
        self.outcome = outcome


class EmergencyOutcomeRefused(TaskClosed):
    """An emergency (a loss reported) closes only when its payment stop ends, never with another outcome.

    A TaskClosed on purpose: every caller that answers 409 for a task closed to
    an outcome (the feedback route, a visit report) answers 409 for this too,
    with this reason.
    """

    def __init__(self, outcome: str) -> None:
        Exception.__init__(self, emergency_refusal(outcome))
        self.outcome = outcome


def emergency_refusal(outcome: str) -> str:
    """Why an emergency task may not be closed with `outcome` (the 409's text)."""
    why = ("the citizen has already sent money, so there is nothing left to dissuade"
           if outcome in NEVER_CLOSES_EMERGENCY else "the loss has been reported")
    return (f"this task is an emergency and cannot be closed as '{outcome}': {why}; it closes with outcome"
            " 'loss_reported' when its payment stop is confirmed or failed (POST /v1/emergencies/{task_id}/payment-stop)")


@dataclass
class FeedbackResult:
    task: Task
    changed: bool
    action: str  # "closed", "emergency", "unchanged"


async def lock_task(session: AsyncSession, task_id: uuid.UUID) -> Task | None:
    """Lock a task and its case, case first: every writer takes them in this order, so none deadlock."""
    case_id = (await session.execute(select(Task.case_id).where(Task.id == task_id))).scalar_one_or_none()
    if case_id is None:
        return None
    await session.execute(select(Case.id).where(Case.id == case_id).with_for_update())
    return (await session.execute(select(Task).where(Task.id == task_id).with_for_update())).scalar_one()


def in_jurisdiction(task: Task, principal: Principal) -> bool:
    """A task is a key's when the citizen's region, or the unit a supervisor handed it to, lies in the key's unit."""
    return principal.covers(task.region_code) or principal.covers(task.assigned_unit)


def state_of(task: Task) -> plans.PlanState:
    return plans.PlanState(
        task_id=task.id, case_id=task.case_id, phone=task.phone, region_code=task.region_code,
        fraud_type=task.fraud_type, tier=task.tier, plan_started_at=task.plan_started_at, plan_seq=task.plan_seq,
        due_at=task.due_at, has_chat=task.has_chat, steps_done=list(task.steps_done or []),
        attempts=dict(task.attempts or {}), assigned_unit=task.assigned_unit,
    )


def store_state(task: Task, state: plans.PlanState) -> None:
    task.tier = state.tier
    task.plan_started_at = state.plan_started_at
    task.plan_seq = state.plan_seq
    task.due_at = state.due_at
    task.steps_done = list(state.steps_done)
    task.attempts = dict(state.attempts)


async def sync_operator_jobs(session: AsyncSession, *, task_id: uuid.UUID, tier: str, due_at: datetime,
                             unit: str | None = None, now: datetime | None = None) -> int:
    """A task's waiting or claimed operator calls follow its tier, deadline and unit (the seats' queue order).

    `now` brings them forward to now (a supervisor's "call now"). Returns how many there were.
    """
    return await queue.update_task_jobs(session, task_id=task_id, kinds=[contracts.OperatorCall.KIND],
                                        priority=PRIORITY[tier], due_at=due_at, scope=unit, run_by=now,
                                        payload_patch={"tier": tier, "due_at": due_at.isoformat()})


async def recheck_visit_claims(session: AsyncSession, *, task_id: uuid.UUID, now: datetime) -> None:
    """A raised tier has a shorter claim time for its visit: its waiting claim check runs now and waits again
    for the new tier's time (visits.check_claimed), instead of at the old tier's."""
    await queue.update_task_jobs(session, task_id=task_id, kinds=[contracts.VisitClaimCheck.KIND], run_by=now)


async def enqueue_task_jobs(session: AsyncSession, task: Task, jobs: list[NewJob], *, now: datetime) -> None:
    """Enqueue a locked task's new jobs, keeping one live operator call per task.

    Two live operator calls of one task (the plan's, then a citizen's "call me", a call back agreed, a raised
    tier's new plan) would let two seats claim the same citizen at once. A new one is folded into the one
    already queued or held by a seat (shared.queue.service.fold_into_live: as urgent as the more urgent, its
    deadline and unit); the task's attempt counter goes back to what it was, as no new attempt was made.
    The task's row lock (lock_task) keeps two writers from both finding none live.
    """
    new: list[NewJob] = []
    for job in jobs:
        if job.kind == contracts.OperatorCall.KIND and await queue.fold_into_live(session, job) is not None:
            task.attempts = {**(task.attempts or {}), "operator_call": int(job.payload["attempt"]) - 1}
            continue
        new.append(job)
    await queue.enqueue(session, new, now=now)


def _record(session: AsyncSession, task: Task, *, at: datetime, actor: str, action: str, **body: Any) -> None:
    audit.record(session, at=at, actor=actor, action=action, task_id=task.id, case_id=task.case_id,
                 region_code=task.region_code, **body)


async def stop_contact(session: AsyncSession, task: Task, *, reason: str, now: datetime, outcome: str | None = None,
                       live_call_attempt: int | None = None) -> None:
    """Tell the bot and the callcenter to stop what already left the queue: alerts on screen, robocalls ringing.

    The caller cancels the queued automated jobs in the same transaction; these two jobs reach
    the rest. `live_call_attempt`: the automated call the citizen answered on, left to finish
    (it is saying "recorded", or connecting them to an officer).
    """
    stops = [contracts.StopAlerts(task_id=task.id, reason=reason, outcome=outcome, decided_at=now),
             contracts.StopCalls(task_id=task.id, reason=reason, outcome=outcome, decided_at=now,
                                 except_attempt=live_call_attempt)]
    await queue.enqueue(session, [stop.job(run_at=now, task_id=task.id, priority=PRIORITY["stop"],
                                           dedupe_key=f"{stop.KIND}:{task.id}:{reason}") for stop in stops], now=now)


async def close_task(session: AsyncSession, task: Task, *, outcome: str, actor: str, note: str | None,
                     now: datetime, live_call_attempt: int | None = None) -> None:
    """Close the loop: outcome recorded, case closed, every queued job of the task cancelled, contact stopped."""
    before = {"status": task.status, "tier": task.tier}
    task.status = CLOSED
    task.outcome = outcome
    task.closed_at = now
    task.closed_by = actor
    task.note = note
    if outcome == "acknowledged" and task.reached_at is None:
        task.reached_at = now
    case = await session.get(Case, task.case_id)
    if case is not None:
        case.status = case_models.CLOSED
        case.closed_at = now
    cancelled = await queue.cancel_task_jobs(session, task_id=task.id)
    await stop_contact(session, task, reason="closed", outcome=outcome, now=now, live_call_attempt=live_call_attempt)
    TASKS_CLOSED.labels(outcome, str(now <= task.due_at).lower()).inc()
    _record(session, task, at=now, actor=actor, action="task.closed", before=before,
            after={"status": CLOSED, "outcome": outcome}, note=note, cancelled_jobs=cancelled,
            within_deadline=now <= task.due_at)
    await visits.cancel_live(session, task, outcome=outcome, now=now)  # nobody goes to a closed task's citizen


async def start_emergency(session: AsyncSession, task: Task, policy: LoadedPolicy, *, actor: str,
                          note: str | None, now: datetime, via: str = "feedback",
                          loss: contracts.LossDetails | None = None,
                          live_call_attempt: int | None = None) -> PaymentStop:
    """Money has left: high tier now, a person calls at once, and a payment-stop request opens (保护性止付).

    The request (emergencies.models.PaymentStop, status `requested`) is created
    in this transaction, so an emergency never exists without its payment stop;
    supervisors move it on (services/dispatcher/emergencies/service.py).
    `via`: how the loss was reported (emergencies.models.LOSS_VIA); `loss`: what
    the citizen said about the transfer, when the reporter already knows.
    """
    state = state_of(task)
    before = {"tier": task.tier, "due_at": task.due_at, "status": task.status}
    if state.tier != "high":
        plans.replan(policy, state, new_tier="high", now=now)
    else:
        state.plan_seq += 1
        state.plan_started_at = now
        state.steps_done = []
    # No more automated warnings: the citizen has already acted; a person takes over.
    state.steps_done += [f"channel:{c}" for c in ("bot_alert", "auto_call", "operator_call")]
    # The emergency's operator call replaces any waiting one (a callback), so the task is in the seats' queue once.
    cancelled = await queue.cancel_task_jobs(session, task_id=task.id,
                                             kinds=[*AUTOMATED_CHANNEL_KINDS, contracts.OperatorCall.KIND])
    await stop_contact(session, task, reason="loss_reported", now=now, live_call_attempt=live_call_attempt)
    jobs: list[NewJob] = []
    # A seat already on the task keeps it (now first in its list), rather than a second seat calling too.
    held = await queue.update_task_jobs(session, task_id=task.id, kinds=[contracts.OperatorCall.KIND],
                                        priority=PRIORITY["emergency"], due_at=state.due_at,
                                        payload_patch={"emergency": True, "tier": state.tier,
                                                       "due_at": state.due_at.isoformat()})
    if not held:
        jobs.append(plans.channel_job(state, "operator_call", run_at=now, emergency=True, reason="loss reported"))
    await recheck_visit_claims(session, task_id=task.id, now=now)
    step = plans.next_step(policy, state)
    if step is not None:
        jobs.append(plans.timer_job(state, step))
    store_state(task, state)
    task.emergency_at = now
    task.status = IN_PROGRESS
    TASK_EVENTS.labels("loss_reported").inc()
    await queue.enqueue(session, jobs, now=now)
    stop = PaymentStop.requested(task_id=task.id, case_id=task.case_id, reported_by=actor, reported_via=via,
                                 note=note, now=now)
    details = stop.take_details(loss.columns(), actor=actor, now=now) if loss else {}
    session.add(stop)
    _record(session, task, at=now, actor=actor, action="task.loss_reported", before=before,
            after={"tier": task.tier, "due_at": task.due_at, "status": task.status}, note=note, via=via,
            why="loss reported: emergency handling, operator call queued at once", cancelled_jobs=cancelled)
    _record(session, task, at=now, actor=actor, action="payment_stop.requested", status="requested", via=via,
            details=details or None, why="protective payment stop (保护性止付) requested from the bank liaison")
    return stop


async def note_loss_details(session: AsyncSession, task: Task, loss: contracts.LossDetails, *, actor: str,
                            now: datetime) -> dict[str, Any]:
    """Fill in what the citizen said about the transfer on the task's payment stop (audited); returns what changed.

    The caller holds the task's lock (lock_task), which guards its payment stop too.
    """
    stop = await session.get(PaymentStop, task.id)
    if stop is None:
        return {}
    changed = stop.take_details(loss.columns(), actor=actor, now=now)
    if changed:
        _record(session, task, at=now, actor=actor, action="payment_stop.details", status=stop.status,
                details=changed, why="what the citizen said about the transfer")
    return changed


async def apply_feedback(session: AsyncSession, task: Task, *, outcome: str, actor: str, note: str | None,
                         now: datetime, store: PolicyStore, by_person: bool,
                         live_call_attempt: int | None = None, via: str = "feedback",
                         loss: contracts.LossDetails | None = None) -> FeedbackResult:
    """Move a locked task by one outcome.

    - acknowledged, dissuaded, false_positive, refused, unreachable: close the task.
    - loss_reported: opens the emergency (tier high, operator call now, payment-stop request).
      `via` says how (button, key_3, disposition, visit, feedback); `loss` carries what
      the citizen said about the transfer, when known.
    - On an emergency, the payment stop decides how the task ends: it closes with outcome
      loss_reported, and the amounts, when the stop is confirmed or failed
      (emergencies.service.move_payment_stop). Another loss report only adds details
      (`by_person` no longer closes it); any other outcome, by any path, is refused
      (EmergencyOutcomeRefused, a 409 on the API): acknowledged and dissuaded because
      the money has already left, the rest because closing as them would drop the loss
      and its amounts from the record while the bank is still acting on it.
    - The same outcome again on a closed task changes nothing; another one is refused.
    """
    if task.status == CLOSED:
        if task.outcome == outcome:
            return FeedbackResult(task, False, "unchanged")
        raise TaskClosed(task.outcome)
    if task.emergency_at is not None:
        if outcome != "loss_reported":
            raise EmergencyOutcomeRefused(outcome)
        changed = await note_loss_details(session, task, loss, actor=actor, now=now) if loss else {}
        return FeedbackResult(task, bool(changed), "details" if changed else "unchanged")
    if outcome == "loss_reported":
        policy = await store.get(session, task.policy_version)
        await start_emergency(session, task, policy, actor=actor, note=note, now=now, via=via, loss=loss,
                              live_call_attempt=live_call_attempt)
        return FeedbackResult(task, True, "emergency")
    if outcome not in FINAL_OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    await close_task(session, task, outcome=outcome, actor=actor, note=note, now=now,
                     live_call_attempt=live_call_attempt)
    return FeedbackResult(task, True, "closed")


def outcomes_allowed(task: Task) -> tuple[str, ...]:
    """The outcomes a person may record on the task now, as apply_feedback decides them (the console offers these).

    A closed task takes none (nothing reopens one); an emergency none either: it closes when its payment stop
    is confirmed or failed, and every other outcome is refused (EmergencyOutcomeRefused, a 409).
    """
    if task.status == CLOSED or task.emergency_at is not None:
        return ()
    return OUTCOMES


def refused_on_channel(session: AsyncSession, task: Task, exc: EmergencyOutcomeRefused, *, actor: str,
                       channel: str, note: str | None, now: datetime) -> str:
    """A channel's answer that may not close an emergency: kept on the timeline, the task stays open.

    The job that carried it succeeds (a retry would be refused the same way); the
    supervisors see the emergency open until its payment stop ends.
    """
    log.warning("task.emergency_outcome_refused", outcome=exc.outcome, channel=channel)
    _record(session, task, at=now, actor=actor, action="task.outcome_refused", outcome=exc.outcome,
            channel=channel, note=note, why=str(exc))
    return "refused"


# ---- a supervisor's decision -------------------------------------------------------------------

async def reassign(session: AsyncSession, task: Task, *, to_unit: str | None, actor: str, note: str | None,
                   now: datetime) -> str:
    """Hand a locked, open task to another unit (`to_unit`), or to the seats of its unit now (`to_unit` None).

    Either way a person calls next: a waiting operator call moves with the task
    (the seats' claim reads assigned_unit) and is brought forward to now; without
    one, an operator call is queued at once. Returns "unit" or "operator_queue".
    """
    if task.status == CLOSED:
        raise TaskClosed(task.outcome)
    before = {"assigned_unit": task.assigned_unit, "status": task.status}
    if to_unit is not None:
        task.assigned_unit = to_unit
        await visits.hand_over_open(session, task, to_unit=to_unit, actor=actor, now=now)
    task.reassigned_at = now
    waiting = await sync_operator_jobs(session, task_id=task.id, tier=task.tier, due_at=task.due_at,
                                       unit=task.assigned_unit, now=now)
    queued_new = False
    if not waiting:
        state = state_of(task)
        job = plans.channel_job(state, "operator_call", run_at=now, reason="reassigned by a supervisor",
                                unit=task.assigned_unit, emergency=task.emergency_at is not None)
        store_state(task, state)
        await queue.enqueue(session, [job], now=now)
        queued_new = True
    task.status = IN_PROGRESS
    target = "unit" if to_unit is not None else "operator_queue"
    _record(session, task, at=now, actor=actor, action="task.reassigned", before=before,
            after={"assigned_unit": task.assigned_unit, "status": task.status}, to=target,
            operator_call_queued=queued_new, note=note,
            why=f"supervisor handed the task to unit {to_unit}" if to_unit else "supervisor sent it to the seats now")
    return target


# ---- timers -------------------------------------------------------------------------------------

async def run_due_steps(session: AsyncSession, task: Task, *, plan_seq: int, now: datetime,
                        store: PolicyStore) -> list[str]:
    """Carry out every step of the task's plan that is due and not done; schedule the next timer.

    Idempotent: steps already done are skipped, and a timer from a superseded
    plan (the tier was raised since) does nothing.
    """
    if task.status == CLOSED or plan_seq != task.plan_seq:
        return []
    policy = await store.get(session, task.policy_version)
    state = state_of(task)
    done: list[str] = []
    jobs: list[NewJob] = []
    for step in plan_steps(policy.playbook(state.tier), plan_started_at=state.plan_started_at, due_at=state.due_at):
        if step.at > now or step.name in state.steps_done:
            continue
        state.steps_done.append(step.name)
        done.append(step.name)
        if step.name.startswith("channel:"):
            channel = step.name.removeprefix("channel:")
            if channel == "bot_alert" and not state.has_chat:
                continue
            if channel == "auto_call" and state.attempts.get(NO_AUTO_CALL):
                continue  # the callcenter said it may not robocall this number; an operator call was queued
            jobs.append(plans.channel_job(state, channel, run_at=plans.call_time(policy, state, channel, now),
                                          reason="nobody acknowledged yet", policy=policy))
            _record(session, task, at=now, actor="system:timer", action="task.channel_started",
                    channel=channel, why=f"playbook step {step.name} due", attempt=state.attempts[channel])
        elif step.name == "visit":
            if task.reached_at is not None:
                _record(session, task, at=now, actor="system:timer", action="task.step_skipped", step="visit",
                        why="citizen already reached")
                continue
            jobs.append(plans.channel_job(state, "visit", run_at=now, reason="nobody reached in time"))
            TASK_EVENTS.labels("visit_requested").inc()
            _record(session, task, at=now, actor="system:timer", action="task.visit_requested",
                    unit=task.region_code, why="nobody reached in time: in-person visit by the local unit")
        elif step.name == "escalate":
            if task.escalated_at is None:
                task.escalated_at = now
                TASK_EVENTS.labels("escalated").inc()
                _record(session, task, at=now, actor="system:timer", action="task.escalated", to="supervisor",
                        why=f"still open at {policy.playbook(state.tier).escalate_at_fraction:.0%} of the deadline")
        elif step.name == "breach":
            task.breached = True
            task.breached_at = now
            TASK_EVENTS.labels("breached").inc()
            _record(session, task, at=now, actor="system:timer", action="task.breached",
                    due_at=task.due_at, why="deadline passed without an outcome")
            if task.escalated_at is None:
                task.escalated_at = now
                _record(session, task, at=now, actor="system:timer", action="task.escalated", to="supervisor",
                        why="deadline breached")
            # A visit still open or claimed at the deadline goes to the supervisor (see escalate_overdue).
            await visits.escalate_overdue(session, task, now=now)
    step = plans.next_step(policy, state)
    if step is not None:
        jobs.append(plans.timer_job(state, step))
    store_state(task, state)
    await enqueue_task_jobs(session, task, jobs, now=now)
    return done


# ---- results from the bot and the callcenter ----------------------------------------------------

async def apply_channel_result(session: AsyncSession, task: Task, result: contracts.ChannelResult, *,
                               now: datetime, store: PolicyStore) -> str:
    """React to what happened on a channel: delivered, answered, failed, or a citizen's answer."""
    channel, attempt, kind = result.channel, result.attempt, result.result
    seen_key = f"{channel}:{attempt}:{kind}:{result.feedback or ''}"
    seen = list((task.attempts or {}).get("seen", []))
    if seen_key in seen:
        return "duplicate"
    if task.status == CLOSED:
        _record(session, task, at=now, actor=f"channel:{channel}", action="task.late_result", result=kind,
                attempt=attempt, feedback=result.feedback)
        return "late"
    policy = await store.get(session, task.policy_version)
    state = state_of(task)
    state.attempts["seen"] = [*seen, seen_key][-50:]
    actor = result.actor or f"citizen:{channel}"
    jobs: list[NewJob] = []
    _record(session, task, at=now, actor=f"channel:{channel}", action="task.channel_result", channel=channel,
            attempt=attempt, result=kind, detail=result.detail, feedback=result.feedback)
    if kind in ("delivered", "answered", "pressed") and task.status != CLOSED:
        task.status = IN_PROGRESS
        if kind in ("answered", "pressed") and task.reached_at is None:
            task.reached_at = now
    if result.disposition:
        store_state(task, state)
        return await _operator_disposition(session, task, result, actor=actor, now=now, store=store,
                                           policy=policy)
    if result.feedback:
        store_state(task, state)
        return await _citizen_feedback(session, task, result, actor=actor, now=now, store=store)
    if channel == "bot_alert" and kind in ("no_channel", "blocked", "failed"):
        # The bot could not reach them: move on to a call if none has started (a person's, if no robocall may go).
        if not state.attempts.get("auto_call") and not state.attempts.get("operator_call"):
            call = "operator_call" if state.attempts.get(NO_AUTO_CALL) else "auto_call"
            jobs.append(plans.channel_job(state, call, run_at=plans.call_time(policy, state, call, now),
                                          reason=f"bot alert {kind}", policy=policy))
            state.steps_done.append(f"channel:{call}")
        if kind in ("no_channel", "blocked"):
            state.has_chat = False
            task.has_chat = False
    elif channel == "auto_call" and kind == "operator_required":
        # The callcenter may not robocall this number (its country): no more automated calls, a person calls now.
        state.attempts[NO_AUTO_CALL] = result.detail or kind
        if "channel:operator_call" not in state.steps_done and not state.attempts.get("operator_call"):
            state.steps_done.append("channel:operator_call")
            jobs.append(plans.channel_job(state, "operator_call",
                                          run_at=plans.call_time(policy, state, "operator_call", now),
                                          reason="no automated call to this number: an operator calls"))
    elif channel == "auto_call" and kind in CALL_FAILURES:
        retry = policy.playbook(state.tier).auto_call
        if int(state.attempts.get("auto_call", 0)) < retry.max_attempts:
            wait_min = retry.retry_after_minutes.get(kind, max(retry.retry_after_minutes.values()))
            when = plans.call_time(policy, state, "auto_call", now + timedelta(minutes=wait_min))
            jobs.append(plans.channel_job(state, "auto_call", run_at=when, reason=f"retry after {kind}",
                                          policy=policy))
        elif "channel:operator_call" not in state.steps_done:
            state.steps_done.append("channel:operator_call")
            jobs.append(plans.channel_job(state, "operator_call",
                                          run_at=plans.call_time(policy, state, "operator_call", now),
                                          reason="automated calls used up"))
    store_state(task, state)
    await enqueue_task_jobs(session, task, jobs, now=now)
    return "applied"


# A seat's dispositions that mean the phone did not reach the citizen: the task stays open and people go.
NOT_REACHED_BY_PHONE = ("unreachable", "wrong_number")


async def _operator_disposition(session: AsyncSession, task: Task, result: contracts.ChannelResult, *, actor: str,
                                now: datetime, store: PolicyStore, policy: LoadedPolicy) -> str:
    """A person on the phone recorded what happened: close, escalate, or call back at the time agreed."""
    disposition = result.disposition
    assert disposition is not None
    note = result.note
    if disposition in NOT_REACHED_BY_PHONE:
        return await _phone_failed(session, task, disposition=disposition, actor=actor, note=note, now=now)
    if task.reached_at is None:
        task.reached_at = now
    outcome = DISPOSITION_OUTCOMES[disposition]
    if outcome is not None:
        try:
            feedback = await apply_feedback(session, task, outcome=outcome, actor=actor, note=note, now=now,
                                            store=store, by_person=True, via="disposition", loss=result.loss)
        except EmergencyOutcomeRefused as exc:
            return refused_on_channel(session, task, exc, actor=actor, channel=result.channel, note=note, now=now)
        return feedback.action
    callback_at = result.callback_at or now
    state = state_of(task)
    task.status = IN_PROGRESS
    # An emergency's call back is still first in the seats' queue when its time comes.
    job = plans.channel_job(state, "operator_call", run_at=max(callback_at, now), reason="callback agreed",
                            emergency=task.emergency_at is not None)
    store_state(task, state)
    await enqueue_task_jobs(session, task, [job], now=now)
    _record(session, task, at=now, actor=actor, action="task.callback_scheduled", callback_at=callback_at, note=note,
            why="the citizen asked to be called back then")
    return "callback"


async def _phone_failed(session: AsyncSession, task: Task, *, disposition: str, actor: str, note: str | None,
                        now: datetime) -> str:
    """A seat could not reach the citizen by phone (no answer, or the number is not theirs): people go instead.

    Never closes the task, since a citizen nobody reached is still in danger (closing it as `unreachable` is
    a person's decision, on the feedback route or the console):
    - no visit yet: officers of the task's unit go now (the plan's visit step, brought forward);
    - a visit on its way: it goes on; the officers' report decides;
    - a visit already made and the phone still fails: a supervisor is alerted (escalated) to decide.
    """
    state = state_of(task)
    task.status = IN_PROGRESS
    why_phone = "the number is not the citizen's" if disposition == "wrong_number" else "nobody answered the seat's call"
    statuses = await visits.statuses(session, task.id)
    # Asked for and not reported yet: a visit open or claimed, or the plan's request job not run yet.
    if set(statuses) & set(visits.LIVE) or (state.attempts.get("visit") and not statuses):
        store_state(task, state)
        _record(session, task, at=now, actor=actor, action="task.phone_failed", disposition=disposition, note=note,
                next="visit_under_way", why=f"{why_phone}; officers are already on their way")
        return "visit_under_way"
    if not statuses and not state.attempts.get("visit"):
        if "visit" not in state.steps_done:
            state.steps_done.append("visit")  # the playbook's timer will not ask a second time
        job = plans.channel_job(state, "visit", run_at=now, reason=f"seat: {disposition}")
        store_state(task, state)
        await queue.enqueue(session, [job], now=now)
        TASK_EVENTS.labels("visit_requested").inc()
        _record(session, task, at=now, actor=actor, action="task.phone_failed", disposition=disposition, note=note,
                next="visit_requested", why=f"{why_phone}: officers of the local unit go and meet the citizen")
        _record(session, task, at=now, actor=actor, action="task.visit_requested", unit=task.region_code,
                why=f"{why_phone}: in-person visit now, ahead of the plan")
        return "visit_requested"
    store_state(task, state)
    _record(session, task, at=now, actor=actor, action="task.phone_failed", disposition=disposition, note=note,
            next="supervisor", why=f"{why_phone}, and a visit was already made: a supervisor decides")
    if task.escalated_at is None:
        task.escalated_at = now
        TASK_EVENTS.labels("escalated").inc()
        _record(session, task, at=now, actor="system:dispatcher", action="task.escalated", to="supervisor",
                why="neither the phone nor a visit reached the citizen")
    return "escalated"


async def _citizen_feedback(session: AsyncSession, task: Task, result: contracts.ChannelResult, *, actor: str,
                            now: datetime, store: PolicyStore) -> str:
    """A citizen answered on a channel (a button, a key).

    - acknowledged, loss_reported: close the task, or open the emergency.
    - callback_requested ("call me", key 2) and not_me: a person takes over. No robocall follows
      (the queued ones are cancelled, ringing ones stopped) and an operator call is queued ahead
      of the tier; after key 2 the citizen is on the line waiting for a seat, so the call is for
      when none picks up, and goes first of all.
    """
    feedback = result.feedback
    live_call = result.attempt if result.channel == "auto_call" else None
    if task.reached_at is None:
        task.reached_at = now
    if feedback in ("acknowledged", "loss_reported"):
        try:
            outcome = await apply_feedback(session, task, outcome=feedback, actor=actor, note=result.detail, now=now,
                                           store=store, by_person=False, live_call_attempt=live_call,
                                           via="button" if result.channel == "bot_alert" else "key_3")
        except EmergencyOutcomeRefused as exc:
            return refused_on_channel(session, task, exc, actor=actor, channel=result.channel, note=result.detail,
                                      now=now)
        return outcome.action
    state = state_of(task)
    task.status = IN_PROGRESS
    cancelled = await queue.cancel_task_jobs(session, task_id=task.id, kinds=AUTOMATED_CHANNEL_KINDS)
    for channel in ("bot_alert", "auto_call"):
        if f"channel:{channel}" not in state.steps_done:
            state.steps_done.append(f"channel:{channel}")
    waiting = result.live_transfer_until
    if feedback == "callback_requested" and live_call is not None:
        run_at, priority = max(waiting or now, now), PRIORITY["citizen_waiting"]
    else:
        run_at, priority = now, contracts.front_of_tier(state.tier)
    job = plans.channel_job(state, "operator_call", run_at=run_at, reason=feedback, priority=priority)
    if "channel:operator_call" not in state.steps_done:
        state.steps_done.append("channel:operator_call")
    store_state(task, state)
    await enqueue_task_jobs(session, task, [job], now=now)
    await stop_contact(session, task, reason=feedback, now=now, live_call_attempt=live_call)
    _record(session, task, at=now, actor=actor, action=f"task.{feedback}", cancelled_jobs=cancelled,
            operator_call_at=run_at, live_transfer_until=waiting,
            why=("citizen is on the line waiting for an officer: the seats' phones ring now, a call back follows"
                 " if none picks up" if waiting else "citizen asked for a call back by a person")
            if feedback == "callback_requested"
            else "citizen says the warning is not about them: an operator verifies")
    return feedback
