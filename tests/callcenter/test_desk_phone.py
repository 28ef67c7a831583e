"""Desk-phone seats (issue 14): an operator with no screen calls the seat line and works a task by voice and keypad,
and every seat rests in wrap-up for a while after a disposition."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from services.callcenter.seats.scheduled import WrapUpSweep
from tests.callcenter.test_calls import said
from tests.callcenter.test_seats import operator_task
from tests.conftest import eventually

SEAT_LINE = "+8657196111"  # the centre's seat line: its voice webhook is the callcenter's /twilio/desk
DESK = "+8657187000051"  # the operator's desk phone, stored on their seat
CITIZEN = "+8613900000051"


@pytest.fixture
async def api(callcenter):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        yield client


async def waiting_task(callcenter, *, phone: str, signal: str = "fraud_sms_received", **fields: Any) -> str:  # noqa: ANN001
    """A task in the operator queue (the citizen asked for a call back) from a warning with these fields."""
    return await operator_task(callcenter, phone=phone, signal=signal, **fields)


async def seat(callcenter, api, *, unit: str = "3301", phone: str | None = DESK) -> tuple[str, dict]:  # noqa: ANN001
    """An available seat (with this desk phone): its key id and its headers."""
    headers = await callcenter.dispatcher.headers("operator", unit)
    resp = await api.put("/v1/seat", json={"state": "available", **({"phone": phone} if phone else {})},
                         headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["key_id"], headers


async def seat_line(callcenter) -> None:  # noqa: ANN001
    """The sandbox routes calls to the seat line to the callcenter, as Twilio's number configuration would."""
    await callcenter.phone.call("POST", "/settings", time_scale=1.0)  # phone time is real time: Gathers wait 10 s
    await callcenter.phone.call("PUT", f"/incoming/{SEAT_LINE}", url=f"{callcenter.base_url}/twilio/desk")


class Desk:
    """The operator at the desk phone: dials in, listens, presses keys."""

    def __init__(self, callcenter, sid: str) -> None:  # noqa: ANN001
        self.phone, self.sid, self.seen = callcenter.phone, sid, 0

    async def call(self) -> dict[str, Any]:
        return await self.phone.call("GET", f"/calls/{self.sid}")

    async def hears(self, *phrases: str, timeout_s: float = 10) -> str:
        """Wait until the phone is at a keypad prompt having said every phrase since the last key; what it said."""
        async def ready() -> str | None:
            call = await self.call()
            heard = " ".join(e.get("text", "") for e in call["events"][self.seen:] if e["type"] == "say")
            return heard if call["gathering"] and all(p in heard for p in phrases) else None
        heard = await eventually(ready, timeout_s=timeout_s)
        return heard

    async def press(self, digits: str) -> None:
        self.seen = len((await self.call())["events"])
        await self.phone.call("POST", f"/calls/{self.sid}/press", digits=digits)


async def dial_in(callcenter, from_: str = DESK) -> Desk:  # noqa: ANN001
    call = await callcenter.phone.call("POST", "/dial-in", **{"from": from_, "to": SEAT_LINE})
    return Desk(callcenter, call["sid"])


async def seat_row(callcenter, key_id: str) -> Any:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT * FROM seats WHERE key_id = :k"), {"k": key_id})).one()


async def task_of(callcenter, task_id: str) -> dict:  # noqa: ANN001
    d = callcenter.dispatcher
    return (await d.client.get(f"/v1/tasks/{task_id}", headers=await d.headers("supervisor", ""))).json()


async def test_a_desk_phone_hears_the_task_calls_the_citizen_and_keys_the_disposition(callcenter, api) -> None:
    """Through the sandbox: the desk phone calls in, hears the task in Mandarin (name, age, fraud type, what
    happened, amount, time left), key 1 bridges it to the citizen with the 96110 caller ID, key 1 records
    dissuaded: the task closes as dissuaded with this operator as the actor, and the seat is in wrap-up."""
    key_id, _ = await seat(callcenter, api)
    await seat_line(callcenter)
    await callcenter.phone.call("PUT", f"/numbers/{CITIZEN}", behaviour="answer", ring_s=0.1, hangup_after_s=0.5)
    task_id = await waiting_task(callcenter, phone=CITIZEN, signal="transfer_in_progress", amount_at_risk=80000,
                                 fraud_type="impersonating_police", subject={"name": "张某", "age": 67})
    desk = await dial_in(callcenter)

    await desk.hears("下一条任务请按1")
    await desk.press("1")
    heard = await desk.hears("呼叫市民请按1")
    for words in ("张某", "67岁", "冒充公检法", "正在转账", "80000元", "尾号0051", "距处置时限还剩"):
        assert words in heard, (words, heard)
    claim = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="running")
    assert [j["locked_by"] for j in claim] == [f"seat:{key_id}"]  # the same claim as POST /v1/queue/next

    await desk.press("9")  # again, please
    assert "张某" in await desk.hears("呼叫市民请按1")
    await desk.press("1")
    assert "请记录处置结果" in await desk.hears("劝阻成功按1", "通话结束")
    (leg,) = await callcenter.phone.calls(CITIZEN)
    assert leg["from"] == callcenter.app.state.settings.from_number() and leg["parent_call_sid"] == desk.sid
    assert leg["status"] == "completed" and leg["duration"] is not None

    await desk.press("1")
    heard = await desk.hears("话后整理中")
    assert "已记录：劝阻成功" in heard
    assert (await seat_row(callcenter, key_id)).state == "wrap_up"
    await callcenter.phone.call("POST", f"/calls/{desk.sid}/hangup")

    await callcenter.dispatcher.run_dispatcher_jobs()
    task = await task_of(callcenter, task_id)
    assert task["status"] == "closed" and task["outcome"] == "dissuaded"
    assert task["closed_by"].startswith(f"key:{key_id}:")
    async with callcenter.app.state.sessionmaker() as session:
        audited = (await session.execute(text("SELECT actor FROM audit_log WHERE task_id = :t"
                                              " AND action = 'task.closed'"), {"t": task_id})).scalar_one()
        attempt = (await session.execute(text("SELECT * FROM call_attempts WHERE task_id = :t"),
                                         {"t": task_id})).one()
    assert audited == task["closed_by"]
    assert (attempt.channel, attempt.to_number, attempt.call_sid) == ("operator_call", CITIZEN, leg["sid"])
    assert attempt.from_number == callcenter.app.state.settings.from_number() and attempt.status == "completed"


async def test_a_callback_keyed_in_minutes_reschedules_the_task(callcenter, api) -> None:
    """Key 6 then minutes and #: the task stays open and its operator call waits until then; sign-off by key 0."""
    key_id, _ = await seat(callcenter, api)
    await seat_line(callcenter)
    await callcenter.phone.call("PUT", f"/numbers/{CITIZEN}", behaviour="busy")
    task_id = await waiting_task(callcenter, phone=CITIZEN)
    desk = await dial_in(callcenter)
    await desk.hears("下一条任务请按1")
    await desk.press("1")
    await desk.hears("呼叫市民请按1")
    await desk.press("1")
    await desk.hears("市民未接通", "约定回拨按6")
    await desk.press("6")
    await desk.hears("几分钟后回拨")
    await desk.press("45#")
    heard = await desk.hears("话后整理中")
    assert "已记录：约定回拨" in heard and "45分钟后回拨" in heard
    await desk.press("0")
    ended = await callcenter.phone.call("GET", f"/calls/{desk.sid}?status=final&wait=10")
    assert "已签退" in said(ended) and (await seat_row(callcenter, key_id)).state == "offline"
    again = await dial_in(callcenter)  # calling in again: signed off, key 1 signs in
    await again.hears("您尚未签入")
    await callcenter.phone.call("POST", f"/calls/{again.sid}/hangup")
    await callcenter.dispatcher.run_dispatcher_jobs()
    (waiting,) = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert waiting["run_at"] == callcenter.dispatcher.clock.now() + timedelta(minutes=45)
    assert (await task_of(callcenter, task_id))["status"] != "closed"


async def test_star_switches_the_desk_phone_to_english_and_2_pauses(callcenter, api) -> None:
    """Key * at the menu: the menus and the task are in English; key 2 pauses the seat, which is then told so."""
    key_id, _ = await seat(callcenter, api)
    await seat_line(callcenter)
    await waiting_task(callcenter, phone=CITIZEN, subject={"name": "Li", "age": 30})
    desk = await dial_in(callcenter)
    await desk.hears("下一条任务请按1")
    await desk.press("*")
    await desk.hears("To hear the next task, press 1.")
    await desk.press("2")
    assert "Paused." in await desk.hears("You are paused.")
    assert (await seat_row(callcenter, key_id)).state == "paused"
    await desk.press("1")
    heard = await desk.hears("To call the citizen, press 1.")
    assert "Citizen Li, aged 30" in heard and "Fraud type: fake investment" in heard
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in heard)
    await callcenter.phone.call("POST", f"/calls/{desk.sid}/hangup")


async def test_a_phone_that_is_no_seats_is_refused_politely_and_claims_nothing(callcenter, api) -> None:
    """An unregistered number hears that it is not a seat phone and the line closes; the waiting task stays
    in the queue, unclaimed."""
    await seat(callcenter, api)  # a seat exists, with another phone
    await seat_line(callcenter)
    task_id = await waiting_task(callcenter, phone=CITIZEN)
    desk = await dial_in(callcenter, from_="+8657187000099")
    ended = await callcenter.phone.call("GET", f"/calls/{desk.sid}?status=final&wait=10")
    assert ended["status"] == "completed" and "未登记为坐席电话" in said(ended) and "not registered" in said(ended)
    assert not any(e["type"] == "gather" for e in ended["events"])
    assert len(await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")) == 1


async def test_a_revoked_operator_key_cannot_work_its_desk_phone(callcenter, api) -> None:
    """The seat's key was revoked: its phone is refused like any other number."""
    key_id, _ = await seat(callcenter, api)
    await seat_line(callcenter)
    async with callcenter.app.state.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :k"), {"k": key_id})
    desk = await dial_in(callcenter)
    ended = await callcenter.phone.call("GET", f"/calls/{desk.sid}?status=final&wait=10")
    assert "未登记为坐席电话" in said(ended)


async def test_forged_desk_webhooks_get_403_and_change_nothing(callcenter, api) -> None:
    """No signature, or one made with another token: 403, no claim, no disposition."""
    key_id, _ = await seat(callcenter, api)
    task_id = await waiting_task(callcenter, phone=CITIZEN)
    url = f"{callcenter.base_url}/twilio/desk/menu?seat={key_id}&lang=zh"
    form = {"From": DESK, "To": SEAT_LINE, "CallSid": "CA" + "0" * 32, "Digits": "1"}
    forged = RequestValidator("not-the-token").compute_signature(url, form)
    assert (await api.post("/twilio/desk", data=form)).status_code == 403
    assert (await api.post(url, data=form, headers={"X-Twilio-Signature": forged})).status_code == 403
    dispose = f"/twilio/desk/dispose?seat={key_id}&task={task_id}&lang=zh"
    assert (await api.post(dispose, data=form)).status_code == 403
    assert len(await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")) == 1
    # The real token's signature over the same request is accepted (the 403s were the signature's).
    signed = RequestValidator(callcenter.app.state.settings.auth_token()).compute_signature(url, form)
    assert (await api.post(url, data=form, headers={"X-Twilio-Signature": signed})).status_code == 200
    assert (await seat_row(callcenter, key_id)).state == "available"


async def test_wrap_up_follows_a_disposition_and_ends_after_the_configured_time(callcenter, api) -> None:
    """After a disposition the seat is in wrap-up: a claim is refused (409, saying so) until the 30 s are over,
    then it claims again; no read needed: the sweep ends it too."""
    clock = callcenter.dispatcher.clock
    first = await waiting_task(callcenter, phone="+8613900000052")
    second = await waiting_task(callcenter, phone="+8613900000053")
    key_id, headers = await seat(callcenter, api, phone=None)
    claimed = (await api.post("/v1/queue/next", headers=headers)).json()["task_id"]
    resp = await api.post(f"/v1/tasks/{claimed}/disposition", json={"disposition": "refused"}, headers=headers)
    assert resp.status_code == 202
    row = await seat_row(callcenter, key_id)
    assert row.state == "wrap_up" and (row.wrap_up_until - clock.now()).total_seconds() == 30
    clock.advance(seconds=29)
    refused = await api.post("/v1/queue/next", headers=headers)
    assert refused.status_code == 409 and "wrap-up for 1 s more" in refused.json()["detail"]
    clock.advance(seconds=1)
    again = await api.post("/v1/queue/next", headers=headers)
    assert again.status_code == 200 and {claimed, again.json()["task_id"]} == {first, second}
    # The sweep: a seat nobody reads is available once its wrap-up is over, and idle since then.
    resp = await api.post(f"/v1/tasks/{again.json()['task_id']}/disposition", json={"disposition": "refused"},
                          headers=headers)
    sweep = WrapUpSweep(callcenter.app.state.sessionmaker, clock=clock, interval_s=1)
    assert await sweep.sweep() == 0
    clock.advance(seconds=31)
    assert await sweep.sweep() == 1
    row = await seat_row(callcenter, key_id)
    assert row.state == "available" and row.wrap_up_until is None and row.updated_at < clock.now()


async def test_an_operator_ends_wrap_up_early_by_setting_available(callcenter, api) -> None:
    """PUT state available during wrap-up ends it: the next claim is served at once."""
    await waiting_task(callcenter, phone="+8613900000054")
    second = await waiting_task(callcenter, phone="+8613900000055")
    key_id, headers = await seat(callcenter, api, phone=None)
    claimed = (await api.post("/v1/queue/next", headers=headers)).json()["task_id"]
    await api.post(f"/v1/tasks/{claimed}/disposition", json={"disposition": "dissuaded"}, headers=headers)
    assert (await api.post("/v1/queue/next", headers=headers)).status_code == 409
    assert (await api.put("/v1/seat", json={"state": "available"}, headers=headers)).json()["state"] == "available"
    resp = await api.post("/v1/queue/next", headers=headers)
    assert resp.status_code == 200 and resp.json()["task_id"] == second


@pytest.mark.callcenter_settings(SHOUHU_SEAT_WRAP_UP_S=0)
async def test_no_wrap_up_time_means_straight_back_to_available(callcenter, api) -> None:
    """SHOUHU_SEAT_WRAP_UP_S=0: the seat is available at the disposition and claims the next task at once."""
    await waiting_task(callcenter, phone="+8613900000056")
    await waiting_task(callcenter, phone="+8613900000057")
    key_id, headers = await seat(callcenter, api, phone=None)
    claimed = (await api.post("/v1/queue/next", headers=headers)).json()["task_id"]
    await api.post(f"/v1/tasks/{claimed}/disposition", json={"disposition": "dissuaded"}, headers=headers)
    assert (await seat_row(callcenter, key_id)).state == "available"
    assert (await api.post("/v1/queue/next", headers=headers)).status_code == 200


async def test_the_console_says_wrap_up_after_a_disposition_and_takes_no_task_until_it_ends(callcenter) -> None:
    """On the console a disposition leads to wrap-up (said on the page), not to the next task; once the wrap-up
    time is over, N claims it."""
    from tests.callcenter.test_operator_console import Desk as Console
    from tests.callcenter.test_operator_console import key_of

    first = await waiting_task(callcenter, phone="+8613900000058")
    second = await waiting_task(callcenter, phone="+8613900000059")
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        console = Console(client)
        await console.sign_in(await key_of(callcenter, "operator", "3301"))
        await console.post("/console/seat", state="available")
        assert (await console.post("/console/next")).headers["location"] == f"/console?task={first}&m=claimed"
        recorded = await console.post(f"/console/tasks/{first}/disposition", disposition="dissuaded")
        assert recorded.headers["location"] == "/console?m=recorded_wrap_up"
        page = (await client.get(recorded.headers["location"])).text
        assert 'id="seat-state">话后整理' in page and "话后整理结束后可领取下一条" in page
        assert (await console.post("/console/next")).headers["location"] == "/console?m=wrap_up"
        callcenter.dispatcher.clock.advance(seconds=30)
        assert (await console.post("/console/next")).headers["location"] == f"/console?task={second}&m=claimed"
