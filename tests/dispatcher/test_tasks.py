"""Tasks: channels at start, tier raise on merge, playbook snapshots, timers on a controllable clock, feedback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from services.dispatcher.policy.service import DEFAULT_POLICY_PATH
from tests.conftest import warning


async def post(dispatcher, **fields) -> dict:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(**fields), headers=await dispatcher.headers())
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def get_task(dispatcher, task_id: str, unit: str = "33") -> dict:  # noqa: ANN001
    resp = await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=await dispatcher.headers("supervisor", unit))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def bind_chat(dispatcher, phone: str, chat_id: int = 1001) -> None:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session, session.begin():
        await session.execute(text("INSERT INTO chat_bindings (chat_id, phone) VALUES (:c, :p)"),
                              {"c": chat_id, "p": phone})


def kinds(jobs: list[dict]) -> list[str]:
    return sorted(j["kind"] for j in jobs)


async def test_high_tier_starts_a_call_and_a_bot_alert_at_once(dispatcher) -> None:
    """High tier with a bound chat: bot alert and automated call queued in the same commit as the task."""
    await bind_chat(dispatcher, "+8613800138000")
    answer = await post(dispatcher, signal="transfer_in_progress")
    jobs = await dispatcher.jobs(task_id=answer["task_id"], status="queued")
    assert kinds(jobs) == ["bot.alert", "call.auto", "task.timer"]
    call = next(j for j in jobs if j["kind"] == "call.auto")
    assert call["queue"] == "callcenter" and call["run_at"] == dispatcher.clock.now()
    assert call["payload"]["attempt"] == 1 and call["payload"]["phone"] == "+8613800138000"


async def test_citizen_without_a_bound_chat_gets_the_call_alone(dispatcher) -> None:
    """No Telegram binding: no bot job, the call still goes out, and the audit entry says why."""
    answer = await post(dispatcher, signal="transfer_in_progress")
    jobs = await dispatcher.jobs(task_id=answer["task_id"], status="queued")
    assert kinds(jobs) == ["call.auto", "task.timer"]
    task = await get_task(dispatcher, answer["task_id"])
    created = task["events"][0]
    assert created["type"] == "task.created"
    assert "no bound Telegram chat: bot alert skipped" in created["detail"]["notes"]


async def test_low_tier_without_chat_moves_its_first_call_forward(dispatcher) -> None:
    """A low-tier plan that opens with a bot alert starts its call at once when there is no chat."""
    answer = await post(dispatcher)
    jobs = await dispatcher.jobs(task_id=answer["task_id"], status="queued")
    assert kinds(jobs) == ["call.auto", "task.timer"]


async def test_higher_warning_raises_the_case_and_pulls_the_deadline_in(dispatcher) -> None:
    """A joining warning that grades higher raises the tier and brings the due time forward."""
    low = await post(dispatcher)
    assert low["tier"] == "low"
    dispatcher.clock.advance(minutes=30)
    high = await post(dispatcher, signal="screen_sharing")
    assert high["merged"] is True and high["case_id"] == low["case_id"] and high["task_id"] == low["task_id"]
    assert high["tier"] == "high"
    assert high["due_at"] < low["due_at"]
    assert any(r["rule"] == "case_raised" for r in high["reasons"])
    task = await get_task(dispatcher, low["task_id"])
    assert task["tier"] == "high"
    assert task["due_at"].startswith("2026-11-21T04:30:00")  # raised at 02:30Z + 2 h
    # The raise starts the high plan now: a second call attempt is queued.
    calls = [j for j in await dispatcher.jobs(task_id=low["task_id"]) if j["kind"] == "call.auto"]
    assert [c["payload"]["attempt"] for c in calls] == [1, 2]


async def test_lower_warning_joins_without_lowering(dispatcher) -> None:
    """A later, milder warning joins the case and leaves tier and deadline as they were."""
    high = await post(dispatcher, signal="transfer_in_progress")
    low = await post(dispatcher)
    assert low["merged"] is True and low["tier"] == "high" and low["due_at"] == high["due_at"]
    assert low["reasons"][-1]["rule"] == "open_case"


@pytest.fixture
def edited_policy(tmp_path: Path) -> Path:
    """The default policy with the high deadline cut to 30 minutes."""
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY_PATH.read_text().replace("deadline_minutes: 120", "deadline_minutes: 30"))
    return path


async def test_policy_edits_never_rewrite_running_tasks(dispatcher, edited_policy: Path) -> None:
    """A task follows the policy version it started with, even after the policy changes."""
    from services.dispatcher.policy.service import PolicyStore, load_policy

    old = await post(dispatcher, signal="transfer_in_progress")
    old_task = await get_task(dispatcher, old["task_id"])
    # The operator edits the policy and restarts: new tasks get the new playbook.
    runtime = dispatcher.runtime
    runtime.store = PolicyStore(load_policy(edited_policy))
    async with dispatcher.sessionmaker() as session, session.begin():
        await runtime.store.register_current(session)
    dispatcher.runtime.batcher.store = runtime.store
    new = await post(dispatcher, signal="transfer_in_progress", phone="13911112222")
    new_task = await get_task(dispatcher, new["task_id"])
    assert new_task["policy_version"] != old_task["policy_version"]
    assert new["due_at"].startswith("2026-11-21T02:30:00")
    # The running task keeps its 2-hour plan: at T+40 min it is neither escalated nor breached.
    dispatcher.clock.advance(minutes=40)
    await dispatcher.run_dispatcher_jobs()
    old_task = await get_task(dispatcher, old["task_id"])
    new_task = await get_task(dispatcher, new["task_id"])
    assert old_task["due_at"].startswith("2026-11-21T04:00:00")
    assert old_task["escalated_at"] is None and old_task["breached"] is False
    assert new_task["breached"] is True


async def test_timers_escalate_at_75_percent_and_record_the_breach(dispatcher) -> None:
    """Operator call, visit, escalation and breach happen at their times, not before, exactly once."""
    answer = await post(dispatcher, signal="transfer_in_progress")
    task_id = answer["task_id"]
    dispatcher.clock.advance(minutes=9)
    assert await dispatcher.run_dispatcher_jobs() == 0  # nothing is due yet
    dispatcher.clock.advance(minutes=1)  # T+10: operator call step
    await dispatcher.run_dispatcher_jobs()
    assert [j["kind"] for j in await dispatcher.jobs(task_id=task_id, kind="call.operator")] == ["call.operator"]
    dispatcher.clock.advance(minutes=35)  # T+45: nobody reached, visit
    await dispatcher.run_dispatcher_jobs()
    # The visit request is the dispatcher's own job: it ran at once and left one open visit for the district.
    async with dispatcher.sessionmaker() as session:
        visits = (await session.execute(text("SELECT unit, status FROM visits WHERE task_id = :t"),
                                        {"t": task_id})).all()
    assert [tuple(v) for v in visits] == [("330106", "open")]
    dispatcher.clock.advance(minutes=45)  # T+90 = 75% of 2 h
    await dispatcher.run_dispatcher_jobs()
    task = await get_task(dispatcher, task_id)
    assert task["escalated_at"] is not None and task["breached"] is False
    dispatcher.clock.advance(minutes=30)  # T+120: the deadline
    await dispatcher.run_dispatcher_jobs()
    await dispatcher.run_dispatcher_jobs()  # running again changes nothing
    task = await get_task(dispatcher, task_id)
    assert task["breached"] is True and task["status"] != "closed"
    types = [e["type"] for e in task["events"]]
    assert types.count("task.escalated") == 1 and types.count("task.breached") == 1
    assert types.count("task.visit_requested") == 1
    assert len(await dispatcher.jobs(task_id=task_id, kind="call.operator")) == 1


async def test_medium_calls_wait_for_the_call_window(dispatcher) -> None:
    """A medium-tier call at 23:00 local time is scheduled for 08:00; a high-tier one goes at once."""
    dispatcher.clock.set(dispatcher.clock.now().replace(hour=15))  # 23:00 in Beijing
    medium = await post(dispatcher, signal="fraud_call_received")
    call = (await dispatcher.jobs(task_id=medium["task_id"], kind="call.auto"))[0]
    assert call["run_at"].isoformat() == "2026-11-22T00:00:00+00:00"  # 08:00 Beijing
    high = await post(dispatcher, signal="transfer_in_progress", phone="13911112223")
    call = (await dispatcher.jobs(task_id=high["task_id"], kind="call.auto"))[0]
    assert call["run_at"] == dispatcher.clock.now()


async def feedback(dispatcher, task_id: str, outcome: str, role: str = "officer", unit: str = "3301"):  # noqa: ANN001, ANN201
    return await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": outcome, "note": "已处置"},
                                        headers=await dispatcher.headers(role, unit))


async def test_feedback_closes_the_task_and_stops_contact(dispatcher) -> None:
    """Dissuaded closes the task and case, cancels queued contact (only the channels' stop orders wait), and a new
    warning opens a new case."""
    answer = await post(dispatcher, signal="transfer_in_progress")
    resp = await feedback(dispatcher, answer["task_id"], "dissuaded")
    assert resp.status_code == 200, resp.text
    task = resp.json()["task"]
    assert task["status"] == "closed" and task["outcome"] == "dissuaded"
    waiting = await dispatcher.jobs(task_id=answer["task_id"], status="queued")
    assert sorted((j["queue"], j["kind"], j["payload"]["reason"]) for j in waiting) == [
        ("bot", "bot.stop_alerts", "closed"), ("callcenter", "call.stop", "closed")]
    again = await post(dispatcher, signal="fraud_sms_received")
    assert again["merged"] is False and again["case_id"] != answer["case_id"]


async def test_feedback_repeated_is_idempotent_and_a_different_outcome_conflicts(dispatcher) -> None:
    """The same outcome twice records once; another outcome on a closed task is 409."""
    answer = await post(dispatcher)
    first = await feedback(dispatcher, answer["task_id"], "acknowledged")
    second = await feedback(dispatcher, answer["task_id"], "acknowledged")
    assert first.json()["changed"] is True and second.json()["changed"] is False
    assert (await feedback(dispatcher, answer["task_id"], "refused")).status_code == 409
    events = second.json()["task"]["events"]
    assert [e["type"] for e in events].count("task.closed") == 1


async def test_loss_reported_is_an_emergency(dispatcher) -> None:
    """Loss reported: high tier, an operator call at once (first in line), a payment-stop request, still open."""
    answer = await post(dispatcher, signal="fraud_call_received")
    dispatcher.clock.advance(minutes=5)
    resp = await feedback(dispatcher, answer["task_id"], "loss_reported")
    assert resp.json()["action"] == "emergency"
    task = resp.json()["task"]
    assert task["tier"] == "high" and task["status"] == "in_progress" and task["emergency_at"]
    assert task["due_at"].startswith("2026-11-21T04:05:00")
    operator = await dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")
    assert len(operator) == 1 and operator[0]["priority"] == 0
    async with dispatcher.sessionmaker() as session:
        stop = (await session.execute(text("SELECT status, reported_via FROM payment_stops WHERE task_id = :t"),
                                      {"t": answer["task_id"]})).one()
    assert tuple(stop) == ("requested", "feedback")
    # Automated contact stops: the queued automated call is cancelled.
    assert await dispatcher.jobs(task_id=answer["task_id"], kind="call.auto", status="queued") == []
    types = [e["type"] for e in task["events"]]
    assert "task.loss_reported" in types and "payment_stop.requested" in types
    # Reported again, it changes nothing: the payment stop decides how the emergency ends (tests/dispatcher/
    # test_emergencies.py).
    again = await feedback(dispatcher, answer["task_id"], "loss_reported", role="operator")
    assert again.json()["changed"] is False and again.json()["task"]["status"] == "in_progress"


async def test_feedback_with_an_unknown_outcome_is_422(dispatcher) -> None:
    """Only the contract's outcomes are accepted, and the field is named."""
    answer = await post(dispatcher)
    resp = await feedback(dispatcher, answer["task_id"], "maybe")
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "outcome"


async def test_channel_results_drive_retries_and_acknowledgement_closes(dispatcher) -> None:
    """Busy retries sooner than no answer; a citizen's acknowledgement closes the task and cancels the rest."""
    from services.dispatcher.tasks.plans import RESULT_KIND
    from shared.queue.service import NewJob, enqueue

    answer = await post(dispatcher, signal="fraud_call_received")  # medium: busy 10 min, no answer 30 min
    task_id = answer["task_id"]

    async def result(**payload: object) -> None:
        async with dispatcher.sessionmaker() as session, session.begin():
            await enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=dispatcher.clock.now(),
                                           payload={"task_id": task_id, **payload})])
        await dispatcher.run_dispatcher_jobs()

    await result(channel="auto_call", attempt=1, result="busy")
    await result(channel="auto_call", attempt=1, result="busy")  # a duplicate delivery changes nothing
    calls = await dispatcher.jobs(task_id=task_id, kind="call.auto")
    assert [c["payload"]["attempt"] for c in calls] == [1, 2]
    assert calls[1]["run_at"] - dispatcher.clock.now() == timedelta(minutes=10)
    await result(channel="auto_call", attempt=2, result="no_answer")
    calls = await dispatcher.jobs(task_id=task_id, kind="call.auto")
    assert calls[2]["run_at"] - dispatcher.clock.now() == timedelta(minutes=30)
    await result(channel="auto_call", attempt=3, result="answered", feedback="acknowledged")
    task = await get_task(dispatcher, task_id)
    assert task["status"] == "closed" and task["outcome"] == "acknowledged" and task["reached_at"]
    # Nothing queued but the channels' stop orders; the call the citizen answered on is left to say "recorded".
    waiting = await dispatcher.jobs(task_id=task_id, status="queued")
    assert sorted(j["kind"] for j in waiting) == ["bot.stop_alerts", "call.stop"]
    assert next(j for j in waiting if j["kind"] == "call.stop")["payload"]["except_attempt"] == 3


async def test_call_me_back_on_telegram_queues_a_person_first_in_its_tier_and_never_a_robocall(dispatcher) -> None:
    """"Call me back" pressed on an alert: the queued robocall is cancelled, ringing ones are told to stop, an
    operator call is queued ahead of the tier, and the plan's later robocall step never starts one."""
    from shared import contracts
    from shared.queue.service import enqueue

    answer = await post(dispatcher, signal="fraud_call_received")  # medium: bot alert and robocall at once
    task_id = answer["task_id"]
    assert [j["status"] for j in await dispatcher.jobs(task_id=task_id, kind="call.auto")] == ["queued"]
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [contracts.ChannelResult(
            task_id=task_id, channel="bot_alert", attempt=1, result="pressed", feedback="callback_requested",
            actor="citizen:telegram:42").to_job(now=dispatcher.clock.now())])
    await dispatcher.run_dispatcher_jobs()

    assert [j["status"] for j in await dispatcher.jobs(task_id=task_id, kind="call.auto")] == ["cancelled"]
    (operator,) = await dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert operator["priority"] == contracts.PRIORITY["medium"] - 1 and operator["run_at"] == dispatcher.clock.now()
    (stop,) = await dispatcher.jobs(task_id=task_id, kind="call.stop")
    assert stop["payload"]["reason"] == "callback_requested" and stop["payload"]["except_attempt"] is None
    for _ in range(4):  # a day later every timer has run: still no automated call for this task
        dispatcher.clock.advance(hours=6)
        await dispatcher.run_dispatcher_jobs()
    assert [j["status"] for j in await dispatcher.jobs(task_id=task_id, kind="call.auto")] == ["cancelled"]
    task = await get_task(dispatcher, task_id)
    assert task["status"] == "in_progress" and "task.callback_requested" in [e["type"] for e in task["events"]]


async def test_key_2_holds_the_call_back_while_the_seats_ring_and_then_puts_it_first(dispatcher) -> None:
    """Key 2 on a robocall: the citizen waits on the line, so the operator call is for when no seat picked up
    (run at the end of the wait, before every other job) and that live call is not stopped."""
    from datetime import timedelta

    from shared import contracts
    from shared.queue.service import enqueue

    answer = await post(dispatcher, signal="transfer_in_progress")
    task_id, now = answer["task_id"], dispatcher.clock.now()
    until = now + timedelta(seconds=60)
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [contracts.ChannelResult(
            task_id=task_id, channel="auto_call", attempt=1, result="answered", feedback="callback_requested",
            live_transfer_until=until).to_job(now=now)])
    await dispatcher.run_dispatcher_jobs()
    (operator,) = await dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert operator["priority"] == contracts.PRIORITY["citizen_waiting"] and operator["run_at"] == until
    (stop,) = await dispatcher.jobs(task_id=task_id, kind="call.stop")
    assert stop["payload"]["except_attempt"] == 1
