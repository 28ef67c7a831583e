"""The case file's plan (tasks.plan_view): the playbook's steps for a real task, with due times, owners, states."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.dispatcher.tasks import plan_view
from services.dispatcher.tasks import service as tasks
from services.dispatcher.tasks.models import Task
from shared.contracts import OperatorCall
from shared.queue.service import claim_task_job
from tests.conftest import T0, warning
from tests.console.test_supervisor_findings import channel_result


async def open_task(dispatcher, **fields) -> str:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(**fields), headers=await dispatcher.headers())
    assert resp.status_code == 201, resp.text
    return resp.json()["task_id"]


async def plan_of(dispatcher, task_id: str) -> list[plan_view.PlanItem]:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        task = await session.get(Task, task_id)
        return await plan_view.task_plan(session, task, store=dispatcher.runtime.store, now=dispatcher.clock.now())


def table(plan: list[plan_view.PlanItem]) -> list[tuple]:
    """(step, channel, owner, unit, minutes after T0, state) per step: what the page shows, without the clock."""
    return [(i.step, i.channel, i.owner, i.unit, None if i.due_at is None else (i.due_at - T0) / timedelta(minutes=1),
             i.state) for i in plan]


async def test_a_new_high_task_plans_bot_call_seats_visit_escalation_and_deadline(dispatcher) -> None:  # noqa: ANN001
    """A high task with no bound chat: the bot alert skipped, the robocall done (1 of 4), the district's seats
    next at +10 min, its officers at +45, the supervisor at +90, the deadline at +120, each with its time left."""
    task_id = await open_task(dispatcher, signal="transfer_in_progress", region_code="330106")
    plan = await plan_of(dispatcher, task_id)
    assert table(plan) == [
        ("channel", "bot_alert", "bot", None, 0, "skipped"),
        ("channel", "auto_call", "auto_call", None, 0, "done"),
        ("channel", "operator_call", "seats", "330106", 10, "next"),
        ("visit", "visit", "officers", "330106", 45, "planned"),
        ("escalate", None, "supervisor", None, 90, "planned"),
        ("deadline", None, "unit", "330106", 120, "planned"),
    ]
    auto = plan[1]
    assert (auto.attempt, auto.max_attempts, auto.left_s) == (1, 4, None)
    assert [i.left_s for i in plan[2:]] == [600, 45 * 60, 90 * 60, 120 * 60]


async def test_the_plan_follows_the_timers_a_retry_and_the_visit(dispatcher) -> None:  # noqa: ANN001
    """At +10 min the seats' call is started and waits for a seat (one row), then is in a seat's hands; an unanswered robocall plans its retry 5 min
    later (attempt 2 of 4); at +45 the visit waits for the district's officers; the escalation is then next."""
    task_id = await open_task(dispatcher, signal="transfer_in_progress", region_code="330106")
    dispatcher.clock.advance(minutes=10)
    await dispatcher.run_dispatcher_jobs()
    await channel_result(dispatcher, task_id, channel="auto_call", result="no_answer")
    steps = {(i.step, i.channel): i for i in await plan_of(dispatcher, task_id)}
    seats = steps[("channel", "operator_call")]
    assert (seats.state, seats.owner, seats.unit, seats.attempt) == ("waiting", "seats", "330106", 1)
    assert ("queued", "operator_call") not in steps  # the step itself waits for a seat, not a second row
    async with dispatcher.sessionmaker() as session, session.begin():  # a seat takes the call
        assert await claim_task_job(session, task_id=uuid.UUID(task_id), kinds=[OperatorCall.KIND],
                                    worker="seat:test", now=dispatcher.clock.now(), lease_s=60)
    steps = {(i.step, i.channel): i for i in await plan_of(dispatcher, task_id)}
    assert steps[("channel", "operator_call")].state == "in_hand"
    retry = steps[("retry", "auto_call")]
    assert (retry.attempt, retry.max_attempts, retry.state, retry.left_s) == (2, 4, "next", 300)
    dispatcher.clock.advance(minutes=35)
    await dispatcher.run_dispatcher_jobs()
    plan = await plan_of(dispatcher, task_id)
    visit = next(i for i in plan if i.step == "visit")
    assert (visit.state, visit.owner, visit.unit) == ("waiting", "officers", "330106")
    assert next(i for i in plan if i.state == "next").step == "escalate"


async def test_a_closed_task_shows_what_was_done_and_offers_no_outcome(dispatcher) -> None:  # noqa: ANN001
    """Closed as dissuaded at +20 min: the steps still ahead are not needed, the deadline is met, no time is
    left to count and no outcome may be recorded any more."""
    task_id = await open_task(dispatcher, signal="transfer_in_progress", region_code="330106")
    dispatcher.clock.advance(minutes=20)
    await dispatcher.run_dispatcher_jobs()
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "dissuaded"},
                                        headers=await dispatcher.headers("officer", "3301"))
    assert resp.status_code == 200
    plan = await plan_of(dispatcher, task_id)
    states = {(i.step, i.channel): i.state for i in plan}
    assert states[("visit", "visit")] == "not_needed" and states[("escalate", None)] == "not_needed"
    assert states[("deadline", None)] == "done" and not any(i.state in ("next", "waiting") for i in plan)
    async with dispatcher.sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert tasks.outcomes_allowed(task) == () and plan_view.time_left(task, dispatcher.clock.now()) is None


async def test_an_emergency_plans_its_payment_stop_and_refuses_closing_outcomes(dispatcher) -> None:  # noqa: ANN001
    """A loss reported on a medium task: tier high now, the seats' emergency call waits, the payment stop waits
    for the supervisor, and no outcome is offered (acknowledged and dissuaded are 409s on the API)."""
    task_id = await open_task(dispatcher, signal="fraud_call_received", region_code="330106")
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                        headers=await dispatcher.headers("officer", "3301"))
    assert resp.status_code == 200
    plan = await plan_of(dispatcher, task_id)
    states = {(i.step, i.channel): i.state for i in plan}
    assert states[("payment_stop", None)] == "waiting"
    assert states[("channel", "operator_call")] == "waiting"
    deadline = plan[-1]
    assert deadline.step == "deadline" and deadline.left_s == 120 * 60  # the high tier's 2 h, from the report
    async with dispatcher.sessionmaker() as session:
        task = await session.get(Task, task_id)
        assert tasks.outcomes_allowed(task) == ()
    for outcome in ("acknowledged", "dissuaded"):
        resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": outcome},
                                            headers=await dispatcher.headers("officer", "3301"))
        assert resp.status_code == 409
