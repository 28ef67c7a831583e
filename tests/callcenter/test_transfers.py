"""Key 2: the citizen stays on the line while the seats of the task's unit ring; the first to answer gets them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from shared.contracts import PRIORITY
from tests.callcenter.test_calls import PHONE, said, warn
from tests.conftest import eventually

LOCAL_DESK = "+8657187000031"  # a seat of Hangzhou (3301): the task is in Xihu, 330106
OTHER_DESK = "+8657487000032"  # a seat of Ningbo (3302): never rung for a Hangzhou task


@pytest.fixture
async def api(callcenter):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        yield client


async def seat(callcenter, api, *, unit: str, phone: str) -> tuple[str, dict]:  # noqa: ANN001
    """An available seat with a desk phone: its key id and its headers."""
    headers = await callcenter.dispatcher.headers("operator", unit)
    resp = await api.put("/v1/seat", json={"state": "available", "phone": phone}, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["key_id"], headers


async def number(callcenter, phone: str, behaviour: str, **script: Any) -> None:  # noqa: ANN001
    await callcenter.phone.call("PUT", f"/numbers/{phone}", behaviour=behaviour, **script)


async def citizen_presses_2(callcenter, *, time_scale: float, phone: str = PHONE) -> tuple[dict, str]:  # noqa: ANN001
    """A warning whose robocall the citizen answers and presses 2 on; returns the warning and the call's sid."""
    await callcenter.phone.call("POST", "/settings", time_scale=time_scale)
    await number(callcenter, phone, "answer", digits=["2"], ring_s=0.1)
    answer = await warn(callcenter, phone=phone)
    assert await callcenter.place_calls() == 1
    return answer, (await callcenter.phone.calls(phone))[-1]["sid"]


async def leg_to(callcenter, phone: str, status: str) -> dict:  # noqa: ANN001
    found = await callcenter.phone.call("GET", f"/calls?to={phone.replace('+', '%2B')}&status={status}&wait=10")
    assert found["calls"], f"no {status} call to {phone}"
    return found["calls"][-1]


async def transfer_of(callcenter, task_id: str) -> Any:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT * FROM call_transfers WHERE task_id = :t"), {"t": task_id})).one()


async def seat_state(callcenter, key_id: str) -> str:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT state FROM seats WHERE key_id = :k"), {"k": key_id})).scalar_one()


async def test_key_2_reaches_a_free_seat_of_the_unit_and_the_seat_holds_the_task(callcenter, api) -> None:
    """The local seat's phone rings (never another unit's); it answers, is bridged to the citizen, is on a call,
    and holds the task (its call timer running) while no other seat can claim it."""
    local, local_headers = await seat(callcenter, api, unit="3301", phone=LOCAL_DESK)
    await seat(callcenter, api, unit="3302", phone=OTHER_DESK)
    _, rival_headers = await seat(callcenter, api, unit="33", phone="+8657100000033")
    await number(callcenter, LOCAL_DESK, "manual", hangup_after_s=600)
    await number(callcenter, "+8657100000033", "manual")
    await number(callcenter, OTHER_DESK, "answer", ring_s=0.1)
    answer, citizen = await citizen_presses_2(callcenter, time_scale=0.1)
    leg = await leg_to(callcenter, LOCAL_DESK, "ringing")
    assert leg["parent_call_sid"] == citizen
    # The dispatcher hears key 2 and queues the call-back first of all, held back while the seats ring.
    await callcenter.dispatcher.run_dispatcher_jobs()
    (waiting,) = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")
    assert waiting["priority"] == PRIORITY["citizen_waiting"] and waiting["run_at"] > callcenter.dispatcher.clock.now()
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/answer")
    bridged = await callcenter.phone.call("GET", f"/calls/{citizen}")
    await eventually(lambda: _bridged(callcenter, citizen, leg["sid"]))
    assert "转接民警" in said(bridged)
    # The seat's leg is recorded as connected by its status callback, which may land just after the bridge.
    await eventually(lambda: _outcome_is(callcenter, answer["task_id"], "connected"))
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=local_headers)).json()["items"]
    assert [t["task_id"] for t in mine] == [answer["task_id"]] and mine[0]["live_call"]["connected_at"]
    assert await seat_state(callcenter, local) == "on_call"
    transfer = await transfer_of(callcenter, answer["task_id"])
    assert (transfer.outcome, transfer.answered_by) == ("connected", local) and transfer.claimed_job_id
    assert await callcenter.phone.calls(OTHER_DESK) == []  # another unit's seat is never rung
    # Even once the ring time is over, another seat's claim does not take the task.
    callcenter.dispatcher.clock.advance(minutes=2)
    assert (await api.post("/v1/queue/next", headers=rival_headers)).status_code == 204
    # The seat hangs up: wrap-up, the citizen hears goodbye, and the seat still holds the task to record it.
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/hangup")
    ended = await callcenter.phone.ended(PHONE)
    assert ended["status"] == "completed" and "再见" in said(ended)
    await eventually(lambda: _outcome_is(callcenter, answer["task_id"], "completed"))
    assert await seat_state(callcenter, local) == "wrap_up"
    resp = await api.post(f"/v1/tasks/{answer['task_id']}/disposition", json={"disposition": "dissuaded"},
                          headers=local_headers)
    assert resp.status_code == 202, resp.text
    assert await seat_state(callcenter, local) == "wrap_up"  # then available after SHOUHU_SEAT_WRAP_UP_S


async def _bridged(callcenter, citizen: str, leg_sid: str) -> bool:  # noqa: ANN001
    call = await callcenter.phone.call("GET", f"/calls/{citizen}")
    return any(e["type"] == "bridged" and e["to"] == leg_sid for e in call["events"])


async def _outcome_is(callcenter, task_id: str, outcome: str) -> bool:  # noqa: ANN001
    return (await transfer_of(callcenter, task_id)).outcome == outcome


async def test_a_seat_that_answers_before_the_call_back_is_queued_still_gets_the_task(callcenter, api) -> None:
    """The seat picks up before the dispatcher has queued the operator call: the seat gets it at its next read,
    and no other seat's claim can take it first."""
    local, local_headers = await seat(callcenter, api, unit="330106", phone=LOCAL_DESK)
    await number(callcenter, LOCAL_DESK, "answer", ring_s=0.1, hangup_after_s=600)
    answer, citizen = await citizen_presses_2(callcenter, time_scale=0.1)
    leg = await leg_to(callcenter, LOCAL_DESK, "in-progress")
    await eventually(lambda: _outcome_is(callcenter, answer["task_id"], "connected"))
    assert (await transfer_of(callcenter, answer["task_id"])).claimed_job_id is None  # nothing to claim yet
    await callcenter.dispatcher.run_dispatcher_jobs()
    callcenter.dispatcher.clock.advance(minutes=2)  # past the ring time: the job is claimable by anyone now
    _, rival = await seat(callcenter, api, unit="3301", phone="+8657100000034")
    assert (await api.post("/v1/queue/next", headers=rival)).status_code == 204
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=local_headers)).json()["items"]
    assert [t["task_id"] for t in mine] == [answer["task_id"]]
    assert (await transfer_of(callcenter, answer["task_id"])).answered_by == local
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/hangup")
    await callcenter.phone.ended(PHONE)


async def test_no_seat_within_60_s_the_citizen_hears_an_officer_will_call_back(callcenter, api) -> None:
    """Nobody picks up for 60 s: the call-back message is spoken, the call ends, the seats are free again, and the
    operator call is the first a seat of the unit claims."""
    from tests.callcenter.test_seats import operator_task

    local, headers = await seat(callcenter, api, unit="3301", phone=LOCAL_DESK)
    await number(callcenter, LOCAL_DESK, "no-answer")
    other_task = await operator_task(callcenter, phone="+8613900000041", signal="screen_sharing")  # high tier, waiting
    answer, citizen = await citizen_presses_2(callcenter, time_scale=0.05)
    await leg_to(callcenter, LOCAL_DESK, "ringing")
    await callcenter.dispatcher.run_dispatcher_jobs()
    callcenter.dispatcher.clock.advance(seconds=61)  # the minute passes while the seat's phone rings
    ended = await callcenter.phone.ended(PHONE, timeout_s=20)
    assert "10分钟" in said(ended) and ended["ended_by"] == "twiml"
    dial = next(e for e in ended["events"] if e["type"] == "dial")
    dial_end = next(e for e in ended["events"] if e["type"] == "dial_ended")
    assert dial_end["dial_call_status"] == "no-answer" and dial["timeout_s"] == 60
    assert (await leg_to(callcenter, LOCAL_DESK, "no-answer"))["parent_call_sid"] == citizen
    transfer = await transfer_of(callcenter, answer["task_id"])
    assert transfer.outcome == "no_answer" and transfer.answered_by is None and transfer.seats == [local]
    (job,) = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")
    assert job["priority"] == PRIORITY["citizen_waiting"] and job["run_at"] <= callcenter.dispatcher.clock.now()
    claimed = await api.post("/v1/queue/next", headers=headers)
    assert claimed.status_code == 200 and claimed.json()["task_id"] == answer["task_id"] != other_task


async def test_with_no_free_seat_the_citizen_is_told_at_once(callcenter) -> None:
    """No seat of the unit is free: no ringing, the call-back message at once, and the operator call is queued now."""
    answer, _ = await citizen_presses_2(callcenter, time_scale=0.05)
    ended = await callcenter.phone.ended(PHONE)
    assert "10分钟" in said(ended) and not any(e["type"] == "dial" for e in ended["events"])
    assert (await transfer_of(callcenter, answer["task_id"])).outcome == "no_seat"
    await callcenter.dispatcher.run_dispatcher_jobs()
    (job,) = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")
    assert job["priority"] == PRIORITY["citizen_waiting"] and job["run_at"] == callcenter.dispatcher.clock.now()


async def test_a_seat_holding_a_task_is_not_rung(callcenter, api) -> None:
    """The unit's only seat holds a claimed task (处置中): a citizen pressing 2 holds without ringing it, and
    hears the call-back promise when the wait is over."""
    from tests.callcenter.test_seats import operator_task

    held = await operator_task(callcenter, phone="+8613900000061")
    _, headers = await seat(callcenter, api, unit="3301", phone=LOCAL_DESK)
    claim = await api.post("/v1/queue/next", headers=headers)
    assert claim.status_code == 200 and claim.json()["task_id"] == held
    answer, sid = await citizen_presses_2(callcenter, time_scale=0.05)
    holding = await eventually(lambda: _holding(callcenter, sid))
    assert "请稍候" in said(holding) and not any(e["type"] == "dial" for e in holding["events"])
    callcenter.dispatcher.clock.advance(seconds=61)
    ended = await callcenter.phone.ended(PHONE, timeout_s=20)
    assert "10分钟" in said(ended) and not any(e["type"] == "dial" for e in ended["events"])
    assert await callcenter.phone.calls(LOCAL_DESK) == []
    assert (await transfer_of(callcenter, answer["task_id"])).outcome == "no_seat"


async def test_a_ringing_seat_is_not_offered_a_second_citizen(callcenter, api) -> None:
    """Two citizens press 2 together with one free seat: it rings for one of them while the other holds; when it
    declines the first, the second citizen's next look rings it, and the first holds (it was rung for them)."""
    await seat(callcenter, api, unit="3301", phone=LOCAL_DESK)
    await number(callcenter, LOCAL_DESK, "manual", hangup_after_s=600)
    await callcenter.phone.call("POST", "/settings", time_scale=0.1)
    citizens = ["+8613900000051", "+8613900000052"]
    for p in citizens:
        await number(callcenter, p, "answer", digits=["2"], ring_s=0.1)
        await warn(callcenter, phone=p, signal="transfer_in_progress")
    assert await callcenter.place_calls() == 2
    first_leg = await leg_to(callcenter, LOCAL_DESK, "ringing")
    first = first_leg["parent_call_sid"]
    (second,) = [(await callcenter.phone.calls(p))[-1]["sid"] for p in citizens
                 if (await callcenter.phone.calls(p))[-1]["sid"] != first]
    holding = await eventually(lambda: _holding(callcenter, second))
    assert "请稍候" in said(holding) and not any(e["type"] == "dial" for e in holding["events"])
    assert len(await callcenter.phone.calls(LOCAL_DESK)) == 1
    await callcenter.phone.call("POST", f"/calls/{first_leg['sid']}/reject")
    second_leg = await leg_to(callcenter, LOCAL_DESK, "ringing")
    assert second_leg["parent_call_sid"] == second
    await callcenter.phone.call("POST", f"/calls/{second_leg['sid']}/answer")
    await eventually(lambda: _bridged(callcenter, second, second_leg["sid"]))
    assert await _holding(callcenter, first)  # declined once for them: not rung again for the first citizen
    await callcenter.phone.call("POST", f"/calls/{second_leg['sid']}/hangup")
    callcenter.dispatcher.clock.advance(seconds=61)
    for p in citizens:
        await callcenter.phone.ended(p, timeout_s=20)


async def _holding(callcenter, sid: str) -> dict | None:  # noqa: ANN001
    call = await callcenter.phone.call("GET", f"/calls/{sid}")
    events = call["events"]
    last_dial = max((i for i, e in enumerate(events) if e["type"] == "dial"), default=-1)
    return call if any(e["type"] == "pause" for e in events[last_dial + 1:]) else None


async def test_forged_transfer_callbacks_are_refused(callcenter) -> None:
    """The transfer webhooks check X-Twilio-Signature like the others: 403, nothing changes."""
    async with httpx.AsyncClient() as client:
        for path, form in (("/twilio/transfer-leg?transfer=1&seat=abc", {"CallStatus": "in-progress"}),
                           ("/twilio/transfer-end?attempt=1&transfer=1", {"DialCallStatus": "no-answer"}),
                           ("/twilio/transfer-next?attempt=1&transfer=1", {"CallStatus": "in-progress"})):
            url = callcenter.base_url + path
            forged = RequestValidator("not-the-token").compute_signature(url, form)
            assert (await client.post(url, data=form)).status_code == 403
            assert (await client.post(url, data=form, headers={"X-Twilio-Signature": forged})).status_code == 403


async def test_the_call_back_message_is_in_the_citizens_language(callcenter) -> None:
    """A citizen who chose English in the bot hears the call-back promise in English."""
    async with callcenter.app.state.sessionmaker() as session, session.begin():
        await session.execute(text("INSERT INTO chat_bindings (chat_id, phone, lang) VALUES (7001, :p, 'en')"),
                              {"p": PHONE})
    await citizen_presses_2(callcenter, time_scale=0.05)
    ended = await callcenter.phone.ended(PHONE)
    assert "call you back within 10 minutes" in said(ended) and "10分钟" not in said(ended)


@pytest.mark.slow
async def test_the_seats_console_opens_the_task_with_the_call_timer(callcenter, api, page) -> None:  # noqa: ANN001
    """An idle desk polls its inbox; once the seat's phone picked up a citizen, the desk reloads to the task with
    the time the call was connected (the timer counts from it, in the browser too: console.js, under the CSP)."""
    from tests.conftest import console_sign_in, sign_in

    key = (await callcenter.dispatcher.headers("operator", "3301"))["Authorization"].removeprefix("Bearer ")
    await seat(callcenter, api, unit="3301", phone=LOCAL_DESK)
    await number(callcenter, LOCAL_DESK, "answer", ring_s=0.1, hangup_after_s=600)
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as browser:
        _, csrf = await console_sign_in(browser, key)
        assert csrf
        idle = await browser.get("/console/inbox")
        assert idle.status_code == 204 and "hx-refresh" not in idle.headers
        assert 'hx-get="/console/inbox"' in (await browser.get("/console")).text
        answer, _ = await citizen_presses_2(callcenter, time_scale=0.1)
        leg = await leg_to(callcenter, LOCAL_DESK, "in-progress")
        await callcenter.dispatcher.run_dispatcher_jobs()
        await eventually(lambda: _outcome_is(callcenter, answer["task_id"], "connected"))
        assert (await browser.get("/console/inbox")).headers.get("hx-refresh") == "true"
        desk = (await browser.get("/console")).text
        assert f'data-task-id="{answer["task_id"]}"' in desk and 'id="live-call"' in desk and "data-since=" in desk
    await sign_in(page, callcenter.base_url, key)
    # The timer counts on the server's clock from the connection (0:00 at first), then on by the browser's seconds.
    await expect(page.locator("#call-timer")).not_to_have_text("0:00")
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/hangup")
    await callcenter.phone.ended(PHONE)
