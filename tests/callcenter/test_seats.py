"""Seat operators: claiming with leases, racing seats, click-to-call, dispositions, history within the unit."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.dispatcher.tasks.plans import RESULT_KIND
from shared.queue import service as q
from shared.queue.service import NewJob
from tests.conftest import warning
from tests.dispatcher import test_visits as visits_test


async def operator_task(callcenter, *, phone: str, signal: str = "fraud_call_received",  # noqa: ANN001
                        region: str = "330106", **fields: Any) -> str:
    """A task waiting in the operator queue (the citizen asked for a call back), from a warning with these fields."""
    d = callcenter.dispatcher
    resp = await d.client.post("/v1/warnings", json=warning(phone=phone, signal=signal, region_code=region, **fields),
                               headers=await d.headers("ingest", ""))
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["task_id"]
    async with d.sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": task_id, "channel": "bot_alert", "attempt": 1,
                                                  "result": "pressed", "feedback": "callback_requested"})])
    await d.run_dispatcher_jobs()
    return task_id


@pytest.fixture
async def api(callcenter):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        yield client


async def seat(callcenter, api, unit: str = "3301", phone: str | None = None) -> dict:  # noqa: ANN001
    headers = await callcenter.dispatcher.headers("operator", unit)
    body = {"state": "available", **({"phone": phone} if phone else {})}
    resp = await api.put("/v1/seat", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return headers


async def test_next_takes_the_highest_tier_then_the_earliest_deadline(callcenter, api) -> None:
    """A high-tier task is claimed before an older medium one; an empty queue answers 204."""
    medium = await operator_task(callcenter, phone="+8613900000001")
    high = await operator_task(callcenter, phone="+8613900000002", signal="screen_sharing")
    headers = await seat(callcenter, api)
    first = await api.post("/v1/queue/next", headers=headers)
    assert first.status_code == 200 and first.json()["task_id"] == high
    assert first.json()["phone"] == "+8613900000002" and first.json()["reasons"]
    second = await api.post("/v1/queue/next", headers=headers, params={"held": "keep"})  # a second one, on purpose
    assert second.json()["task_id"] == medium
    assert (await api.post("/v1/queue/next", headers=headers, params={"held": "keep"})).status_code == 204


async def test_a_task_handed_to_the_city_is_claimed_by_city_seats_not_district_ones(callcenter, api) -> None:
    """A supervisor hands a district's task to its city: the district's seats no longer see it, the city's do."""
    task_id = await operator_task(callcenter, phone="+8613900000031", region="330106")
    other = await operator_task(callcenter, phone="+8613900000032", region="330108")
    d = callcenter.dispatcher
    handed = await d.client.post(f"/v1/tasks/{task_id}/reassign", json={"to": "unit", "unit": "3301"},
                                 headers=await d.headers("supervisor", "33"))
    assert handed.status_code == 200, handed.text
    district = await seat(callcenter, api, unit="330106")
    assert (await api.post("/v1/queue/next", headers=district)).status_code == 204
    city = await seat(callcenter, api, unit="3301")
    first = await api.post("/v1/queue/next", headers=city)
    assert first.status_code == 200 and first.json()["task_id"] == task_id  # same tier and deadline: older job first
    assert first.headers["Server-Timing"].startswith("claim;dur=")  # the claim statement's time, for the bench
    assert (await api.post("/v1/queue/next", headers=city, params={"held": "keep"})).json()["task_id"] == other
    assert (await api.post("/v1/queue/next", headers=await seat(callcenter, api, unit="3302"))).status_code == 204


async def test_a_paused_seat_cannot_claim(callcenter, api) -> None:
    """Only an available seat takes work; pausing needs a reason."""
    headers = await callcenter.dispatcher.headers("operator", "3301")
    assert (await api.put("/v1/seat", json={"state": "paused"}, headers=headers)).status_code == 422
    await api.put("/v1/seat", json={"state": "paused", "reason": "午餐 lunch"}, headers=headers)
    assert (await api.post("/v1/queue/next", headers=headers)).status_code == 409


async def test_two_seats_racing_for_one_task_get_it_once(callcenter, api) -> None:
    """Two seats claiming at the same moment: one gets the task, the other gets 204."""
    await operator_task(callcenter, phone="+8613900000003")
    a = await seat(callcenter, api, unit="3301")
    b = await seat(callcenter, api, unit="33")
    answers = await asyncio.gather(api.post("/v1/queue/next", headers=a), api.post("/v1/queue/next", headers=b))
    assert sorted(r.status_code for r in answers) == [200, 204]


async def test_an_expired_claim_returns_the_task_to_the_queue(callcenter, api) -> None:
    """No disposition before the lease ends: the task goes back, and another seat can take it."""
    task_id = await operator_task(callcenter, phone="+8613900000004")
    a = await seat(callcenter, api, unit="3301")
    b = await seat(callcenter, api, unit="33")
    claimed = (await api.post("/v1/queue/next", headers=a)).json()
    assert (await api.post("/v1/queue/next", headers=b)).status_code == 204
    callcenter.dispatcher.clock.advance(minutes=11)
    async with callcenter.app.state.sessionmaker() as session, session.begin():
        assert await q.reclaim_expired(session, now=callcenter.dispatcher.clock.now()) == 1
    again = await api.post("/v1/queue/next", headers=b)
    assert again.status_code == 200 and again.json()["task_id"] == claimed["task_id"] == task_id
    late = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded"}, headers=a)
    assert late.status_code == 409


async def test_a_disposition_closes_the_task(callcenter, api) -> None:
    """Dissuaded, recorded by the seat holding the task, closes it in the dispatcher."""
    task_id = await operator_task(callcenter, phone="+8613900000005")
    headers = await seat(callcenter, api)
    await api.post("/v1/queue/next", headers=headers)
    resp = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded", "note": "已劝阻"},
                          headers=headers)
    assert resp.status_code == 202
    await callcenter.dispatcher.run_dispatcher_jobs()
    task = (await callcenter.dispatcher.client.get(f"/v1/tasks/{task_id}",
                                                   headers=await callcenter.dispatcher.headers("supervisor", ""))).json()
    assert task["status"] == "closed" and task["outcome"] == "dissuaded"
    assert task["closed_by"].startswith("key:")


async def test_callback_keeps_the_task_and_queues_a_call_then(callcenter, api) -> None:
    """A callback at an agreed time: the task stays open and an operator call waits until then."""
    task_id = await operator_task(callcenter, phone="+8613900000006")
    headers = await seat(callcenter, api)
    await api.post("/v1/queue/next", headers=headers)
    when = callcenter.dispatcher.clock.now() + timedelta(hours=2)
    bad = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "callback"}, headers=headers)
    assert bad.status_code == 422
    resp = await api.post(f"/v1/tasks/{task_id}/disposition",
                          json={"disposition": "callback", "callback_at": when.isoformat()}, headers=headers)
    assert resp.status_code == 202
    await callcenter.dispatcher.run_dispatcher_jobs()
    waiting = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert [j["run_at"] for j in waiting] == [when]


async def test_wrong_number_is_never_called_again_and_officers_go(callcenter, api) -> None:
    """A wrong number goes on the do-not-call list; the task stays open and the district's officers visit."""
    task_id = await operator_task(callcenter, phone="+8613900000007")
    headers = await seat(callcenter, api)
    await api.post("/v1/queue/next", headers=headers)
    resp = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "wrong_number"}, headers=headers)
    assert resp.status_code == 202, resp.text
    await callcenter.dispatcher.run_dispatcher_jobs()
    async with callcenter.app.state.sessionmaker() as session:
        listed = (await session.execute(text("SELECT count(*) FROM do_not_call WHERE phone = '+8613900000007'"))
                  ).scalar_one()
    assert listed == 1
    task = await visits_test.task_json(callcenter.dispatcher, task_id)
    assert task["status"] == "in_progress" and task["outcome"] is None
    assert [v["status"] for v in await visits_test.visit_rows(callcenter.dispatcher, task_id)] == ["open"]


async def test_unreachable_keeps_the_task_open_and_sends_officers_now(callcenter, api) -> None:
    """A seat that reaches nobody does not close the task: a visit is requested at once, and the plan's own
    visit step later joins it instead of sending a second."""
    d = callcenter.dispatcher
    task_id = await operator_task(callcenter, phone="+8613900000017")
    headers = await seat(callcenter, api)
    assert (await api.post("/v1/queue/next", headers=headers)).json()["task_id"] == task_id
    resp = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "unreachable", "note": "无人接听"},
                          headers=headers)
    assert resp.status_code == 202, resp.text
    await d.run_dispatcher_jobs()
    task = await visits_test.task_json(d, task_id)
    assert task["status"] == "in_progress" and task["outcome"] is None
    rows = await visits_test.visit_rows(d, task_id)
    assert [(v["status"], v["unit"]) for v in rows] == [("open", "330106")]
    types = [e["type"] for e in task["events"]]
    assert types.index("task.phone_failed") < types.index("visit.created")
    failed = next(e for e in task["events"] if e["type"] == "task.phone_failed")
    assert failed["detail"]["next"] == "visit_requested" and failed["detail"]["note"] == "无人接听"
    d.clock.advance(hours=13)  # past every tier's visit step: the plan's timer finds the visit already sent
    await d.run_dispatcher_jobs()
    assert len(await visits_test.visit_rows(d, task_id)) == 1


async def test_unreachable_after_a_visit_found_nobody_goes_to_the_supervisor(callcenter, api) -> None:
    """Phone and visit both failed: no second visit of its own accord, the task stays open and escalated."""
    d = callcenter.dispatcher
    task_id = await operator_task(callcenter, phone="+8613900000027")
    headers = await seat(callcenter, api)
    await api.post("/v1/queue/next", headers=headers)
    await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "unreachable"}, headers=headers)
    await d.run_dispatcher_jobs()
    [visit] = await visits_test.visit_rows(d, task_id)
    me = await visits_test.officer(d)
    resp = await visits_test.report(d, str(visit["id"]), me, outcome="not_found", note="家中无人")
    assert resp.status_code == 200, resp.text
    # The citizen asks for a call again (a button); the seat's call reaches nobody once more.
    async with d.sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": task_id, "channel": "bot_alert", "attempt": 2,
                                                  "result": "pressed", "feedback": "callback_requested"})])
    await d.run_dispatcher_jobs()
    await seat(callcenter, api, phone=None)
    assert (await api.post("/v1/queue/next", headers=headers)).json()["task_id"] == task_id
    await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "unreachable"}, headers=headers)
    await d.run_dispatcher_jobs()
    task = await visits_test.task_json(d, task_id)
    assert task["status"] == "in_progress" and task["escalated_at"] is not None
    assert [v["status"] for v in await visits_test.visit_rows(d, task_id)] == ["reported"]
    last = [e for e in task["events"] if e["type"] == "task.phone_failed"][-1]
    assert last["detail"]["next"] == "supervisor"


async def test_click_to_call_rings_the_seat_then_bridges_to_the_citizen(callcenter, api) -> None:
    """The seat's phone rings first; when it answers, the citizen is dialled with the 96110 caller ID."""
    citizen = "+8613900000008"
    desk = "+8657187000001"
    await callcenter.phone.script(desk, "answer")
    await callcenter.phone.script(citizen, "answer")
    task_id = await operator_task(callcenter, phone=citizen)
    headers = await seat(callcenter, api, phone=desk)
    await api.post("/v1/queue/next", headers=headers)
    resp = await api.post(f"/v1/tasks/{task_id}/call", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rings"] == desk
    await callcenter.phone.ended(desk)
    legs = await callcenter.phone.calls(citizen)
    assert len(legs) == 1 and legs[0]["from"] == callcenter.app.state.settings.from_number()
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=headers)).json()["items"]
    assert [t["task_id"] for t in mine] == [task_id]


async def test_history_is_visible_within_the_unit_only(callcenter, api) -> None:
    """A citizen's earlier warnings and calls: shown to their unit's operators, 404 elsewhere."""
    await operator_task(callcenter, phone="+8613900000009", region="330106")
    own = await seat(callcenter, api, unit="3301")
    other = await seat(callcenter, api, unit="3201")
    resp = await api.get("/v1/subjects/139 0000 0009/history", headers=own)
    assert resp.status_code == 200 and resp.json()["warnings"][0]["signal"] == "fraud_call_received"
    assert (await api.get("/v1/subjects/13900000009/history", headers=other)).status_code == 404


async def test_operator_routes_need_an_operator_key(callcenter, api) -> None:
    """No key: 401. Another role's key: 403."""
    assert (await api.post("/v1/queue/next")).status_code == 401
    ingest = await callcenter.dispatcher.headers("ingest", "33")
    assert (await api.post("/v1/queue/next", headers=ingest)).status_code == 403
