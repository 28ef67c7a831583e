"""Seat work over HTTP: one task at a time (409 naming the held one), returning a task, hang-up, the seat board."""

from __future__ import annotations

import asyncio
import re

import httpx
from sqlalchemy import text

from tests.callcenter.test_operator_console import Desk, desks, key_of, operator_job_status  # noqa: F401 (desks: the fixture)
from tests.callcenter.test_seats import api, operator_task, seat  # noqa: F401 (api: the fixture)


async def seat_state(callcenter, unit: str) -> str:  # noqa: ANN001
    """The stored state of the (one) seat of this unit."""
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT state FROM seats WHERE unit = :u"), {"u": unit})).scalar_one()


async def in_progress(callcenter, number: str) -> None:  # noqa: ANN001
    """Wait until the last call to `number` is answered (the sandbox rings for 0.1 phone seconds)."""
    for _ in range(200):
        calls = await callcenter.phone.calls(number)
        if calls and calls[-1]["status"] == "in-progress":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the call to {number} was not answered: {await callcenter.phone.calls(number)}")


async def test_next_with_a_task_in_hand_is_refused_naming_it_then_release_or_keep(callcenter, api) -> None:  # noqa: ANN001, F811
    """A second POST /v1/queue/next while holding a task: 409 naming it, nothing claimed; held=release returns it
    and claims the next; held=keep takes a second one on purpose."""
    first = await operator_task(callcenter, phone="+8613900000801", signal="screen_sharing")
    second = await operator_task(callcenter, phone="+8613900000802")
    headers = await seat(callcenter, api)
    assert (await api.post("/v1/queue/next", headers=headers)).json()["task_id"] == first
    refused = await api.post("/v1/queue/next", headers=headers)
    assert refused.status_code == 409
    body = refused.json()
    assert [h["task_id"] for h in body["held"]] == [first] and body["held"][0]["tier"] == "high"
    assert "held=release" in body["detail"]
    assert await operator_job_status(callcenter, second) == ["queued"]
    bad = await api.post("/v1/queue/next", headers=headers, params={"held": "both"})
    assert bad.status_code == 422 and "held" in bad.text
    released = await api.post("/v1/queue/next", headers=headers, params={"held": "release"})
    assert released.status_code == 200 and released.json()["task_id"] == second
    assert await operator_job_status(callcenter, first) == ["queued"]  # back for any seat, its attempt not counted
    jobs = await callcenter.dispatcher.jobs(task_id=first, kind="call.operator")
    assert jobs[0]["attempts"] == 0 and jobs[0]["locked_by"] is None
    kept = await api.post("/v1/queue/next", headers=headers, params={"held": "keep"})
    assert kept.status_code == 200 and kept.json()["task_id"] == first
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=headers)).json()["items"]
    assert sorted(t["task_id"] for t in mine) == sorted([first, second])


async def test_a_task_already_called_cannot_be_returned_and_a_hang_up_ends_the_call(callcenter, api) -> None:  # noqa: ANN001, F811
    """Hang-up ends the seat's live call through Twilio and puts the seat back on its task; a called task is
    not returned to the queue (its disposition is owed); nobody else can hang up my call."""
    citizen, desk_phone = "+8613900000811", "+8657187000811"
    await callcenter.phone.script(desk_phone, "answer")
    await callcenter.phone.call("PUT", f"/numbers/{citizen}", behaviour="answer", digits=[], ring_s=0.1,
                                hangup_after_s=100_000)
    task_id = await operator_task(callcenter, phone=citizen)
    await operator_task(callcenter, phone="+8613900000812")
    headers = await seat(callcenter, api, phone=desk_phone)
    assert (await api.post(f"/v1/tasks/{task_id}/hangup", headers=headers)).status_code == 409  # not mine yet
    await api.post("/v1/queue/next", headers=headers)
    no_call = await api.post(f"/v1/tasks/{task_id}/hangup", headers=headers)
    assert no_call.status_code == 409 and "no live call" in no_call.json()["detail"]
    assert (await api.post(f"/v1/tasks/{task_id}/call", headers=headers)).status_code == 200
    await in_progress(callcenter, citizen)
    assert await seat_state(callcenter, "3301") == "on_call"

    other = await seat(callcenter, api, unit="33")
    assert (await api.post(f"/v1/tasks/{task_id}/hangup", headers=other)).status_code == 409
    assert (await callcenter.phone.calls(citizen))[-1]["status"] == "in-progress"
    hung = await api.post(f"/v1/tasks/{task_id}/hangup", headers=headers)
    assert hung.status_code == 200, hung.text
    seat_leg = await callcenter.phone.ended(desk_phone)
    assert hung.json()["call_sid"] == seat_leg["sid"] and seat_leg["ended_by"] == "api"
    assert (await callcenter.phone.ended(citizen))["status"] == "completed"
    assert await seat_state(callcenter, "3301") == "available"  # off the phone; the desk shows it on the task
    again = await api.post("/v1/queue/next", headers=headers, params={"held": "release"})
    assert again.status_code == 409 and [h["task_id"] for h in again.json()["held"]] == [task_id]
    assert await operator_job_status(callcenter, task_id) == ["running"]
    resp = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded"}, headers=headers)
    assert resp.status_code == 202


def depth_row(page: str, unit: str) -> dict[str, int]:
    row = re.search(rf'<tr[^>]*data-unit="{re.escape(unit)}">(.*?)</tr>', page, re.S)
    assert row, f"no queue row for {unit}"
    return {tier: int(n) for tier, n in re.findall(r'data-tier="(\w+)">(?:<b>)?(\d+)', row.group(1))}


async def test_the_seat_board_shows_my_units_seats_and_queue_only(callcenter, api) -> None:  # noqa: ANN001, F811
    """A 3301 operator's board: its unit's seats with their shown state (a seat holding a task is 处置中), the
    queue by tier and district; another unit's seat, task, district and counts never appear."""
    await operator_task(callcenter, phone="+8613900000821", region="330106", signal="screen_sharing")
    await operator_task(callcenter, phone="+8613900000822", region="330106")
    await operator_task(callcenter, phone="+8613900000823", region="330108")
    await operator_task(callcenter, phone="+8613900000824", region="330203", signal="screen_sharing")
    district = await seat(callcenter, api, unit="330106")
    assert (await api.post("/v1/queue/next", headers=district)).status_code == 200  # the 330106 high task
    await seat(callcenter, api, unit="3302")
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        desk = Desk(client)
        await desk.sign_in(await key_of(callcenter, "operator", "3301"))
        await desk.post("/console/seat", state="paused", reason="培训")
        page = (await client.get("/console/seats")).text
        live = await client.get("/console/seats/live")
    assert live.status_code == 200 and 'id="board"' in live.text and "<html" not in live.text
    seats = dict(re.findall(r'<td>(\d+)</td>\s*<td><b class="state \w+" data-state="(\w+)"', page))
    assert seats == {"3301": "paused", "330106": "on_task"}
    assert "处置中" in page and "暂停" in page and "（培训）" in page
    assert depth_row(page, "*") == {"emergency": 0, "high": 0, "medium": 2, "low": 0}
    assert depth_row(page, "330106") == {"emergency": 0, "high": 0, "medium": 1, "low": 0}
    assert depth_row(page, "330108") == {"emergency": 0, "high": 0, "medium": 1, "low": 0}
    assert "330203" not in page and "3302<" not in page


async def test_a_supervisor_reads_the_seat_board_of_their_unit_over_the_api(callcenter, api) -> None:  # noqa: ANN001, F811
    """GET /v1/seats for a 3301 supervisor: 3301's seats and queue; a 3302 supervisor sees none of it."""
    await operator_task(callcenter, phone="+8613900000831", region="330106")
    headers = await seat(callcenter, api, unit="3301")
    await api.post("/v1/queue/next", headers=headers)
    await operator_task(callcenter, phone="+8613900000832", region="330108")
    d = callcenter.dispatcher
    board = await api.get("/v1/seats", headers=await d.headers("supervisor", "3301"))
    assert board.status_code == 200, board.text
    body = board.json()
    assert [(s["unit"], s["state"]) for s in body["seats"]] == [("3301", "on_task")]
    assert body["queue"]["by_tier"] == {"emergency": 0, "high": 0, "medium": 1, "low": 0}
    assert list(body["queue"]["by_unit"]) == ["330108"]
    theirs = (await api.get("/v1/seats", headers=await d.headers("supervisor", "3302"))).json()
    assert theirs["seats"] == [] and theirs["queue"]["by_unit"] == {} and sum(theirs["queue"]["by_tier"].values()) == 0
    assert (await api.get("/v1/seats", headers=await d.headers("ingest", "3301"))).status_code == 403


async def test_hang_up_ends_the_bridge_of_a_citizen_put_through_by_key_2(callcenter, api) -> None:  # noqa: ANN001, F811
    """A seat talking to a citizen who pressed 2 hangs up through the API: its leg ends (the citizen hears
    goodbye), the seat is in wrap-up with the task still in hand to record."""
    from tests.callcenter import test_transfers as tr

    local, headers = await tr.seat(callcenter, api, unit="3301", phone=tr.LOCAL_DESK)
    await tr.number(callcenter, tr.LOCAL_DESK, "manual", hangup_after_s=600)
    answer, citizen = await tr.citizen_presses_2(callcenter, time_scale=0.1)
    leg = await tr.leg_to(callcenter, tr.LOCAL_DESK, "ringing")
    await callcenter.dispatcher.run_dispatcher_jobs()
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/answer")
    await tr.eventually(lambda: tr._outcome_is(callcenter, answer["task_id"], "connected"))
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=headers)).json()["items"]
    assert [t["task_id"] for t in mine] == [answer["task_id"]]

    hung = await api.post(f"/v1/tasks/{answer['task_id']}/hangup", headers=headers)
    assert hung.status_code == 200, hung.text
    assert hung.json()["call_sid"] == leg["sid"]
    ended = await callcenter.phone.ended(tr.PHONE)
    assert ended["status"] == "completed" and "再见" in tr.said(ended)
    await tr.eventually(lambda: tr._outcome_is(callcenter, answer["task_id"], "completed"))
    assert await tr.seat_state(callcenter, local) == "wrap_up"
    again = await api.post(f"/v1/tasks/{answer['task_id']}/hangup", headers=headers)
    assert again.status_code == 409
    resp = await api.post(f"/v1/tasks/{answer['task_id']}/disposition", json={"disposition": "dissuaded"},
                          headers=headers)
    assert resp.status_code == 202


async def test_the_seat_board_speaks_english_when_asked(callcenter, desks) -> None:  # noqa: ANN001, F811
    """The board in English: its headings, a seat on a task, the tiers, no Chinese state words."""
    await operator_task(callcenter, phone="+8613900000841")
    desk = await desks()
    await desk.post("/console/seat", state="available")
    await desk.post("/console/next")
    switched = await desk.client.get("/console/lang/en", params={"next": "/console/seats"})
    page = (await desk.client.get(switched.headers["location"])).text
    assert "Seat board" in page and ">on a task<" in page and "Waiting to be taken" in page and ">medium<" in page
    assert "处置中" not in page and "坐席看板" not in page


async def test_a_call_the_citizen_ends_shows_as_ended_and_the_seat_is_back_on_its_task(callcenter, desks) -> None:  # noqa: ANN001, F811
    """The citizen hangs up first: the status callback takes the seat off the phone (处置中), and the desk's polled
    call box shows the call over with Call back in place of Hang up."""
    citizen, desk_phone = "+8613900000851", "+8657187000851"
    await callcenter.phone.script(desk_phone, "answer")
    await callcenter.phone.script(citizen, "answer")  # talks a moment, then hangs up
    task_id = await operator_task(callcenter, phone=citizen)
    desk = await desks()
    await desk.post("/console/seat", state="available", phone=desk_phone)
    await desk.post("/console/next")
    assert (await desk.post(f"/console/tasks/{task_id}/call")).headers["location"].endswith("m=calling")
    await callcenter.phone.ended(citizen)
    await callcenter.phone.ended(desk_phone)
    box = (await desk.client.get(f"/console/tasks/{task_id}/call-box")).text
    assert 'id="call-form"' in box and 'id="hangup-form"' not in box and "hx-trigger" not in box
    assert 'data-state="ended"' in box and "通话已结束" in box
    now = (await desk.client.get("/console/seat-now")).text
    assert 'data-state="on_task"' in now and "处置中" in now
    other = await desks("operator", "3302")
    assert 'id="call-box"' in (await other.client.get(f"/console/tasks/{task_id}/call-box")).text
    assert "data-state" not in (await other.client.get(f"/console/tasks/{task_id}/call-box")).text  # not theirs
