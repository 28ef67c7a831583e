"""Field visits (见面处置) through the API: created by the plan or by a person, claimed once, reported once, scoped."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from sqlalchemy import text

from shared.auth.service import create_key
from shared.db import transaction
from tests.conftest import warning


async def officer(dispatcher, unit: str = "330106", name: str | None = None) -> dict[str, str]:  # noqa: ANN001
    """Headers of a new officer key (each call a different officer)."""
    async with transaction(dispatcher.sessionmaker) as session:
        _, full = await create_key(session, role="officer", unit=unit, name=name or f"officer-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {full}"}


async def high_task(dispatcher, **fields) -> dict:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(signal="transfer_in_progress", **fields),
                                        headers=await dispatcher.headers())
    assert resp.status_code == 201, resp.text
    return resp.json()


async def request_visit(dispatcher, task_id: str, note: str = "她现在在银行", unit: str = "3301"):  # noqa: ANN001, ANN201
    return await dispatcher.client.post(f"/v1/tasks/{task_id}/visits", json={"note": note},
                                        headers=await dispatcher.headers("operator", unit))


async def visit_for(dispatcher, **fields) -> tuple[str, str]:  # noqa: ANN001
    """A high-tier task with a visit an operator requested: (task_id, visit_id)."""
    task_id = (await high_task(dispatcher, **fields))["task_id"]
    resp = await request_visit(dispatcher, task_id)
    assert resp.status_code == 201, resp.text
    return task_id, resp.json()["visit_id"]


async def events(dispatcher, task_id: str) -> list[dict]:  # noqa: ANN001
    resp = await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=await dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


async def task_json(dispatcher, task_id: str) -> dict:  # noqa: ANN001
    resp = await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=await dispatcher.headers("supervisor", "33"))
    return resp.json()


async def report(dispatcher, visit_id: str, headers: dict, outcome: str = "dissuaded", key: str | None = None,  # noqa: ANN001, ANN201
                 **body):
    extra = {"Idempotency-Key": key} if key else {}
    return await dispatcher.client.post(f"/v1/visits/{visit_id}/report", json={"outcome": outcome, **body},
                                        headers={**headers, **extra})


async def visit_rows(dispatcher, task_id: str) -> list[dict]:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        rows = await session.execute(text("SELECT * FROM visits WHERE task_id = :t ORDER BY requested_at"),
                                     {"t": task_id})
        return [dict(r) for r in rows.mappings()]


async def visit_escalated_at(dispatcher, task_id: str, *, after_minutes: float) -> datetime | None:  # noqa: ANN001
    """Move the clock on, run the dispatcher's jobs (the claim check among them), and read the visit's escalated_at."""
    dispatcher.clock.advance(minutes=after_minutes)
    await dispatcher.run_dispatcher_jobs()
    await dispatcher.run_dispatcher_jobs()
    return (await visit_rows(dispatcher, task_id))[0]["escalated_at"]


# ---- created by the plan, or by a person --------------------------------------------------------------

async def test_the_plans_visit_step_makes_a_visit_the_districts_officers_see(dispatcher) -> None:
    """Nobody reached by T+45 min: the visit.request job becomes one open visit for the district, with the deadline."""
    answer = await high_task(dispatcher, subject={"name": "张桂英", "age": 67}, amount_at_risk=80000)
    dispatcher.clock.advance(minutes=45)
    await dispatcher.run_dispatcher_jobs()
    assert await dispatcher.run_dispatcher_jobs() == 0  # nothing left: the request ran once
    rows = await visit_rows(dispatcher, answer["task_id"])
    assert len(rows) == 1 and rows[0]["status"] == "open" and rows[0]["unit"] == "330106"
    assert rows[0]["requested_by"] == "system:dispatcher" and rows[0]["request_attempt"] == 1
    listed = (await dispatcher.client.get("/v1/visits", headers=await officer(dispatcher))).json()["items"]
    assert [v["visit_id"] for v in listed] == [str(rows[0]["id"])]
    item = listed[0]
    assert datetime.fromisoformat(item["due_at"]) == datetime.fromisoformat(answer["due_at"])
    assert item["minutes_left"] == 75 and item["tier"] == "high" and item["phone"] == "+8613800138000"
    assert item["subject"] == {"name": "张桂英", "age": 67, "gender": None}
    assert item["signals"] == ["transfer_in_progress"] and float(item["amount_at_risk"]) == 80000
    types = [e["type"] for e in await events(dispatcher, answer["task_id"])]
    assert types.index("task.visit_requested") < types.index("visit.created")


async def test_an_operator_sends_a_visit_at_once_and_a_second_request_joins_it(dispatcher) -> None:
    """POST /v1/tasks/{id}/visits: 201 with the note; again: 200, the same visit, the note on the timeline."""
    task_id = (await high_task(dispatcher))["task_id"]
    first = await request_visit(dispatcher, task_id, note="她现在在银行")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "open" and first.json()["note"] == "她现在在银行"
    second = await request_visit(dispatcher, task_id, note="工商银行文三路支行")
    assert second.status_code == 200 and second.json()["visit_id"] == first.json()["visit_id"]
    timeline = await events(dispatcher, task_id)
    requested = [e for e in timeline if e["type"] == "task.visit_requested"]
    assert [e["detail"]["note"] for e in requested] == ["她现在在银行", "工商银行文三路支行"]
    assert [e["type"] for e in timeline].count("visit.created") == 1
    # The plan's own visit step later joins the live visit instead of making a second one.
    dispatcher.clock.advance(minutes=45)
    await dispatcher.run_dispatcher_jobs()
    assert len(await visit_rows(dispatcher, task_id)) == 1


async def test_visit_requests_are_refused_for_closed_tasks_other_units_and_officers(dispatcher) -> None:
    """A closed task: 409; another city's operator: 404; an officer key: 403; a long note: 422 naming it."""
    task_id = (await high_task(dispatcher))["task_id"]
    assert (await request_visit(dispatcher, task_id, unit="3302")).status_code == 404
    officer_try = await dispatcher.client.post(f"/v1/tasks/{task_id}/visits", json={},
                                               headers=await officer(dispatcher))
    assert officer_try.status_code == 403
    long = await request_visit(dispatcher, task_id, note="x" * 501)
    assert long.status_code == 422 and long.json()["errors"][0]["field"] == "note"
    await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "acknowledged"},
                                 headers=await dispatcher.headers("operator", "3301"))
    assert (await request_visit(dispatcher, task_id)).status_code == 409
    assert await visit_rows(dispatcher, task_id) == []


# ---- claim -----------------------------------------------------------------------------------------------

async def test_two_officers_racing_for_one_visit_one_wins_the_other_hears_who(dispatcher) -> None:
    """Concurrent claims: exactly one 200; the other 409 naming the winner; the claim is audited once."""
    for round_ in range(3):
        task_id, visit_id = await visit_for(dispatcher, phone=f"1390000000{round_}")
        wang, li = await officer(dispatcher, name=f"王警官{round_}"), await officer(dispatcher, name=f"李网格员{round_}")
        answers = await asyncio.gather(*(dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=h)
                                         for h in (wang, li)))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        winner = next(a for a in answers if a.status_code == 200).json()
        loser = next(a for a in answers if a.status_code == 409).json()
        winner_name = winner["claimed_by"].split(":", 2)[2]
        assert winner["status"] == "claimed" and winner["mine"] is True
        assert winner_name in loser["detail"] and "claimed by" in loser["detail"]
        assert [e["type"] for e in await events(dispatcher, task_id)].count("visit.claimed") == 1
        # The winner claiming again is no conflict; the loser's list does not show the visit any more.
        winner_headers = wang if winner_name.startswith("王") else li
        loser_headers = li if winner_headers is wang else wang
        assert (await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=winner_headers)).status_code == 200
        listed = (await dispatcher.client.get("/v1/visits", headers=loser_headers)).json()["items"]
        assert visit_id not in [v["visit_id"] for v in listed]


# ---- report ----------------------------------------------------------------------------------------------

async def test_a_retried_report_is_recorded_once(dispatcher) -> None:
    """The same Idempotency-Key twice: one report, one task.closed, the same answer; another key afterwards: 409."""
    task_id, visit_id = await visit_for(dispatcher)
    me = await officer(dispatcher)
    assert (await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=me)).status_code == 200
    dispatcher.clock.advance(minutes=20)
    met_at = (dispatcher.clock.now() - timedelta(minutes=5)).isoformat()
    first = await report(dispatcher, visit_id, me, key="submit-7f3a", note="已劝阻，停止转账", met_at=met_at)
    retry = await report(dispatcher, visit_id, me, key="submit-7f3a", note="已劝阻，停止转账", met_at=met_at)
    assert first.status_code == 200 and retry.status_code == 200, (first.text, retry.text)
    assert first.json()["replayed"] is False and retry.json()["replayed"] is True
    assert first.json()["visit"] == retry.json()["visit"] and retry.json()["task_action"] == "closed"
    assert first.json()["visit"]["outcome"] == "dissuaded" and first.json()["visit"]["status"] == "reported"
    other = await report(dispatcher, visit_id, me, outcome="refused", key="another-key")
    assert other.status_code == 409 and "already reported" in other.json()["detail"]
    assert (await report(dispatcher, visit_id, me)).status_code == 409  # no key at all: a second report
    types = [e["type"] for e in await events(dispatcher, task_id)]
    assert types.count("visit.reported") == 1 and types.count("task.closed") == 1
    task = await task_json(dispatcher, task_id)
    assert task["status"] == "closed" and task["outcome"] == "dissuaded"
    assert task["reached_at"].startswith(met_at[:19])  # meeting the citizen reaches them
    assert task["closed_by"].startswith("key:")


async def test_an_officer_of_another_district_gets_404_everywhere(dispatcher) -> None:
    """330102's officer cannot see, read, claim or report 330106's visit: 404, as if it did not exist."""
    _, visit_id = await visit_for(dispatcher)
    outsider = await officer(dispatcher, unit="330102")
    assert (await dispatcher.client.get("/v1/visits", headers=outsider)).json()["items"] == []
    assert (await dispatcher.client.get(f"/v1/visits/{visit_id}", headers=outsider)).status_code == 404
    assert (await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=outsider)).status_code == 404
    assert (await report(dispatcher, visit_id, outsider)).status_code == 404
    missing = uuid.uuid4()
    assert (await dispatcher.client.post(f"/v1/visits/{missing}/claim", headers=outsider)).status_code == 404
    # The city's officer (a prefix of the district) does see it.
    city = await officer(dispatcher, unit="3301")
    assert (await dispatcher.client.get(f"/v1/visits/{visit_id}", headers=city)).status_code == 200
    # An ingest key is no officer.
    assert (await dispatcher.client.get("/v1/visits", headers=await dispatcher.headers())).status_code == 403


async def test_not_found_keeps_the_task_open_and_sends_it_to_the_supervisor(dispatcher) -> None:
    """not_found: the task stays open, escalated, in the supervisor's escalation queue, with the reason audited."""
    from services.dispatcher.console.service import escalation_queue

    task_id, visit_id = await visit_for(dispatcher)
    me = await officer(dispatcher)
    dispatcher.clock.advance(minutes=30)
    resp = await report(dispatcher, visit_id, me, outcome="not_found", note="家中无人，邻居称她去了银行")
    assert resp.status_code == 200, resp.text
    assert resp.json()["task_action"] == "escalated" and resp.json()["visit"]["met_at"] is None
    task = await task_json(dispatcher, task_id)
    assert task["status"] == "in_progress" and task["escalated_at"] is not None and task["reached_at"] is None
    timeline = [(e["type"], e["detail"]) for e in task["events"]]
    types = [t for t, _ in timeline]
    assert types[-4:] == ["visit.claimed", "visit.reported", "visit.not_found", "task.escalated"]
    assert "nobody" in timeline[-1][1]["why"]
    async with dispatcher.sessionmaker() as session:
        queue = await escalation_queue(session, unit="3301")
    assert [str(r.id) for r in queue] == [task_id]
    # The supervisor can send another visit now: the first is over, so this is a new one.
    again = await dispatcher.client.post(f"/v1/tasks/{task_id}/visits", json={"note": "去工商银行文三路支行"},
                                         headers=await dispatcher.headers("supervisor", "33"))
    assert again.status_code == 201 and again.json()["visit_id"] != visit_id


async def test_loss_reported_on_a_visit_opens_the_emergency(dispatcher) -> None:
    """loss_reported is task feedback: the emergency opens (payment stop requested) and the task stays open."""
    task_id, visit_id = await visit_for(dispatcher)
    resp = await report(dispatcher, visit_id, await officer(dispatcher), outcome="loss_reported", note="已转账2万元")
    assert resp.status_code == 200 and resp.json()["task_action"] == "emergency"
    task = await task_json(dispatcher, task_id)
    assert task["emergency_at"] is not None and task["status"] != "closed"
    assert "payment_stop.requested" in [e["type"] for e in task["events"]]


async def test_a_visit_to_an_emergency_reports_the_loss_or_not_found_and_nothing_else(dispatcher) -> None:
    """Money already sent before the officer arrives: dissuaded is a 409 naming the emergency; the loss is recorded."""
    task_id, visit_id = await visit_for(dispatcher)
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                        headers=await dispatcher.headers("operator", "3301"))
    assert resp.json()["action"] == "emergency"
    me = await officer(dispatcher)
    refused = await report(dispatcher, visit_id, me, outcome="dissuaded")
    assert refused.status_code == 409 and "emergency" in refused.json()["detail"]
    assert (await visit_rows(dispatcher, task_id))[0]["status"] == "open"  # the refusal changed nothing
    done = await report(dispatcher, visit_id, me, outcome="loss_reported", note="已转账两万元到“安全账户”")
    assert done.status_code == 200 and done.json()["task_action"] in ("details", "unchanged")
    task = await task_json(dispatcher, task_id)
    assert task["status"] != "closed" and task["emergency_at"] is not None  # the payment stop decides the end


async def test_a_report_names_the_field_it_cannot_take(dispatcher) -> None:
    """Unknown outcome, met_at in the future, without a time zone, or with not_found: 422 naming the field."""
    task_id, visit_id = await visit_for(dispatcher)
    me = await officer(dispatcher)
    future = (dispatcher.clock.now() + timedelta(hours=1)).isoformat()
    for body, field in (({"outcome": "gone_fishing"}, "outcome"),
                        ({"outcome": "dissuaded", "met_at": future}, "met_at"),
                        ({"outcome": "dissuaded", "met_at": "2026-11-21T10:00:00"}, "met_at"),
                        ({"outcome": "not_found", "met_at": dispatcher.clock.now().isoformat()}, "met_at"),
                        ({"outcome": "dissuaded", "note": "x" * 2001}, "note"),
                        ({"outcome": "dissuaded", "colour": "red"}, "colour")):
        resp = await dispatcher.client.post(f"/v1/visits/{visit_id}/report", json=body, headers=me)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["errors"][0]["field"] == field, resp.json()
    assert (await visit_rows(dispatcher, task_id))[0]["status"] == "open"  # nothing was recorded


async def test_a_visit_claimed_by_another_officer_cannot_be_reported_by_me(dispatcher) -> None:
    """Only the officer who claimed a visit reports it; an open one is claimed by the report itself."""
    _, visit_id = await visit_for(dispatcher)
    wang, li = await officer(dispatcher, name="王警官"), await officer(dispatcher, name="李网格员")
    await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=wang)
    refused = await report(dispatcher, visit_id, li)
    assert refused.status_code == 409 and "王警官" in refused.json()["detail"]
    _, open_visit = await visit_for(dispatcher, phone="13911112222")
    done = await report(dispatcher, open_visit, li, outcome="false_positive")
    assert done.status_code == 200 and done.json()["visit"]["claimed_by"].endswith(":李网格员")


# ---- the deadline, and the task closing by another path -------------------------------------------------

async def test_a_claimed_visit_not_reported_by_the_deadline_escalates(dispatcher) -> None:
    """At the task's deadline a claimed, unreported visit goes to the supervisor, saying who claimed it."""
    task_id, visit_id = await visit_for(dispatcher)
    await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=await officer(dispatcher, name="王警官"))
    dispatcher.clock.advance(minutes=119)
    await dispatcher.run_dispatcher_jobs()
    assert (await visit_rows(dispatcher, task_id))[0]["escalated_at"] is None  # not before the deadline
    dispatcher.clock.advance(minutes=1)
    await dispatcher.run_dispatcher_jobs()
    await dispatcher.run_dispatcher_jobs()
    row = (await visit_rows(dispatcher, task_id))[0]
    assert row["status"] == "claimed" and row["escalated_at"] == dispatcher.clock.now()
    timeline = await events(dispatcher, task_id)
    escalated = [e for e in timeline if e["type"] == "visit.escalated"]
    assert len(escalated) == 1 and escalated[0]["detail"]["to"] == "supervisor"
    assert "王警官" in escalated[0]["detail"]["why"] and "not reported" in escalated[0]["detail"]["why"]
    task = await task_json(dispatcher, task_id)
    assert task["breached"] is True and task["escalated_at"] is not None


async def test_a_visit_no_officer_takes_within_the_tiers_time_goes_to_a_supervisor_then(dispatcher) -> None:
    """High tier: a visit still untaken 15 minutes after its request is escalated (task and visit) then, once,
    not at the deadline; the task stays open for the supervisor to send officers from elsewhere."""
    task_id, visit_id = await visit_for(dispatcher)
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=14) is None
    assert (await task_json(dispatcher, task_id))["escalated_at"] is None
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=1) == dispatcher.clock.now()
    assert (await visit_rows(dispatcher, task_id))[0]["status"] == "open"
    task = await task_json(dispatcher, task_id)
    assert task["status"] != "closed" and task["breached"] is False
    assert datetime.fromisoformat(task["escalated_at"]) == dispatcher.clock.now()
    escalated = [e for e in await events(dispatcher, task_id) if e["type"] == "visit.escalated"]
    assert len(escalated) == 1 and escalated[0]["detail"]["to"] == "supervisor"
    assert "within 15 minutes" in escalated[0]["detail"]["why"]
    assert not await dispatcher.jobs(kind="visit.claim_check"), "the check ran once and left the queue"


async def test_a_visit_an_officer_takes_in_time_is_not_escalated(dispatcher) -> None:
    """An officer takes the visit 5 minutes after the request: at 15 minutes nothing goes to the supervisor."""
    task_id, visit_id = await visit_for(dispatcher)
    dispatcher.clock.advance(minutes=5)
    claimed = await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=await officer(dispatcher))
    assert claimed.status_code == 200, claimed.text
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=15) is None
    assert (await task_json(dispatcher, task_id))["escalated_at"] is None
    assert not [e for e in await events(dispatcher, task_id) if e["type"] == "visit.escalated"]
    assert not await dispatcher.jobs(kind="visit.claim_check")


async def test_a_raised_tier_checks_the_visit_against_its_own_shorter_claim_time(dispatcher) -> None:
    """A medium task's visit (2 h to be taken) whose task turns high 10 minutes later is escalated at 15 minutes
    from its request, the high tier's time, not after 2 hours."""
    medium = await dispatcher.client.post("/v1/warnings", json=warning(signal="fraud_call_received"),
                                          headers=await dispatcher.headers())
    assert medium.status_code == 201 and medium.json()["tier"] == "medium", medium.text
    task_id = medium.json()["task_id"]
    assert (await request_visit(dispatcher, task_id)).status_code == 201
    await dispatcher.run_dispatcher_jobs()
    dispatcher.clock.advance(minutes=10)
    raised = await high_task(dispatcher)
    assert raised["task_id"] == task_id and raised["tier"] == "high"
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=0) is None
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=5) == dispatcher.clock.now()


async def test_a_supervisor_handing_the_task_on_moves_the_visit_nobody_took(dispatcher) -> None:
    """Escalated because nobody took it: the supervisor hands the task to a neighbouring district, whose officers
    see the visit at once (the first district's no longer do) and get the full 15 minutes from the hand-over."""
    task_id, visit_id = await visit_for(dispatcher)
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=15) is not None
    handed = await dispatcher.client.post(f"/v1/tasks/{task_id}/reassign", json={"to": "unit", "unit": "330102"},
                                          headers=await dispatcher.headers("supervisor", "3301"))
    assert handed.status_code == 200, handed.text
    row = (await visit_rows(dispatcher, task_id))[0]
    assert row["unit"] == "330102" and row["status"] == "open" and row["escalated_at"] is None
    assert row["handed_over_at"] == dispatcher.clock.now()
    neighbour = await dispatcher.client.get("/v1/visits", headers=await officer(dispatcher, unit="330102"))
    assert [v["visit_id"] for v in neighbour.json()["items"]] == [visit_id]
    first = await dispatcher.client.get("/v1/visits", headers=await officer(dispatcher, unit="330106"))
    assert first.json()["items"] == []
    moved = [e for e in await events(dispatcher, task_id) if e["type"] == "visit.handed_over"]
    assert len(moved) == 1 and moved[0]["detail"]["after"] == {"unit": "330102"}
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=14) is None
    assert await visit_escalated_at(dispatcher, task_id, after_minutes=1) == dispatcher.clock.now()


async def test_closing_the_task_by_another_path_cancels_its_visit(dispatcher) -> None:
    """The citizen acknowledges on the phone: the open visit is cancelled, and can no longer be claimed."""
    task_id, visit_id = await visit_for(dispatcher)
    await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "acknowledged"},
                                 headers=await dispatcher.headers("operator", "3301"))
    row = (await visit_rows(dispatcher, task_id))[0]
    assert row["status"] == "cancelled" and row["cancelled_at"] is not None
    me = await officer(dispatcher)
    claim = await dispatcher.client.post(f"/v1/visits/{visit_id}/claim", headers=me)
    assert claim.status_code == 409 and "cancelled" in claim.json()["detail"]
    assert (await report(dispatcher, visit_id, me)).status_code == 409
    types = [e["type"] for e in await events(dispatcher, task_id)]
    assert types.index("task.closed") < types.index("visit.cancelled")
