"""The seat operator console: a shift in a real headless Chromium, and its CSRF, role and unit rules over HTTP."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from services.callcenter.console.views import call_script
from services.dispatcher.tasks.plans import RESULT_KIND
from services.dispatcher.warnings.schemas import FRAUD_TYPES
from shared.queue import service as q
from shared.queue.service import NewJob
from tests.callcenter.test_seats import operator_task
from tests.conftest import console_sign_in, sign_in, warning
from tests.helpers.screenshots import readme_screenshot


async def key_of(callcenter, role: str, unit: str) -> str:  # noqa: ANN001
    return (await callcenter.dispatcher.headers(role, unit))["Authorization"].removeprefix("Bearer ")


async def closed_earlier_case(callcenter, *, phone: str) -> str:  # noqa: ANN001
    """An earlier case about this citizen, closed when they pressed "I understand" on the bot's alert."""
    d = callcenter.dispatcher
    task_id = (await d.client.post("/v1/warnings", json=warning(phone=phone, signal="fraud_sms_received"),
                                   headers=await d.headers("ingest", ""))).json()["task_id"]
    async with d.sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": task_id, "channel": "bot_alert", "attempt": 1,
                                                  "result": "pressed", "feedback": "acknowledged"})])
    await d.run_dispatcher_jobs()
    d.clock.advance(minutes=20)
    return task_id


async def task_row(callcenter, task_id: str) -> dict:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return dict((await session.execute(text("SELECT status, outcome, closed_by FROM tasks WHERE id = :t"),
                                           {"t": task_id})).mappings().one())


async def operator_job_status(callcenter, task_id: str) -> list[str]:  # noqa: ANN001
    return [j["status"] for j in await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator")]


class Desk:
    """The operator console over plain HTTP, as a browser without JavaScript uses it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def sign_in(self, key: str) -> httpx.Response:
        resp, csrf = await console_sign_in(self.client, key)
        self.csrf = csrf or ""
        return resp

    async def post(self, path: str, csrf: bool = True, **data: str) -> httpx.Response:
        return await self.client.post(path, data={**data, **({"csrf_token": self.csrf} if csrf else {})})


@pytest.fixture
async def desks(callcenter):  # noqa: ANN001, ANN201
    clients: list[httpx.AsyncClient] = []

    async def make(role: str = "operator", unit: str = "3301") -> Desk:
        client = httpx.AsyncClient(base_url=callcenter.base_url, timeout=10)
        clients.append(client)
        desk = Desk(client)
        resp = await desk.sign_in(await key_of(callcenter, role, unit))
        desk.signed_in = resp.status_code == 303
        desk.sign_in_answer = resp
        return desk

    yield make
    for client in clients:
        await client.aclose()


@pytest.mark.callcenter_settings(SHOUHU_SEAT_WRAP_UP_S=0)  # the next task follows at once (no wrap-up)
async def test_an_operator_works_through_the_queue_by_keyboard(callcenter, page) -> None:  # noqa: ANN001
    """Sign in, set available, N claims, C rings the seat then the citizen, 1 + Enter records dissuaded: closed."""
    citizen, desk_phone = "+8613900000011", "+8657187000011"
    await callcenter.phone.script(desk_phone, "answer")
    await callcenter.phone.script(citizen, "answer")
    await closed_earlier_case(callcenter, phone=citizen)
    first = await operator_task(callcenter, phone=citizen)
    second = await operator_task(callcenter, phone="+8613900000012")
    base, key = callcenter.base_url, await key_of(callcenter, "operator", "3301")

    await sign_in(page, base, key)
    await page.select_option("#state-form select[name=state]", "available")
    await page.fill("#state-form input[name=phone]", "0571 8700 0011")
    async with page.expect_navigation():
        await page.click("#state-form button[type=submit]")
    assert await page.inner_text("#seat-state") == "空闲"

    async with page.expect_navigation():
        await page.keyboard.press("n")
    card = page.locator("#task-card")
    assert await card.get_attribute("data-task-id") == first
    assert await page.inner_text("#citizen-number") == "+86139****0011"
    assert citizen not in await page.content()  # shown masked; the Call button dials it
    assert "96110" in await page.inner_text("#script")
    assert await page.locator("#reasons li").count() >= 1
    history = await page.inner_text("#history")
    assert "闭环：已知晓" in history and "收到涉诈短信" in history  # the earlier case and its outcome
    assert [await r.inner_text() for r in await page.locator("#mine a").all()] == ["虚假投资理财"]
    await readme_screenshot(page, "operator-console.png")

    async with page.expect_navigation():
        await page.keyboard.press("c")
    assert "正在呼叫" in await page.inner_text(".flash")
    await callcenter.phone.ended(desk_phone)
    legs = await callcenter.phone.calls(citizen)
    assert len(legs) == 1 and legs[0]["from"] == callcenter.app.state.settings.from_number()

    await page.keyboard.press("1")
    assert await page.is_checked("input[name=disposition][value=dissuaded]")
    await page.fill("input[name=note]", "市民表示不再转账")
    await page.keyboard.press("Escape")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    # The next task followed by itself; this one went to the dispatcher, which closes it.
    assert await card.get_attribute("data-task-id") == second
    await callcenter.dispatcher.run_dispatcher_jobs()
    closed = await task_row(callcenter, first)
    assert closed["status"] == "closed" and closed["outcome"] == "dissuaded"
    async with callcenter.app.state.sessionmaker() as session:
        audited = (await session.execute(text("SELECT actor, body FROM audit_log WHERE task_id = :t"
                                              " AND action = 'task.closed'"), {"t": first})).one()
    assert audited.actor == closed["closed_by"] and audited.actor.startswith("key:")
    assert "市民表示不再转账" in audited.body

    await page.keyboard.press("5")  # the radio now has the focus: D still records
    async with page.expect_navigation():
        await page.keyboard.press("d")
    assert "队列中暂无待处理任务" in await page.inner_text(".flash")
    assert await card.get_attribute("data-task-id") is None
    await callcenter.dispatcher.run_dispatcher_jobs()
    assert (await task_row(callcenter, second))["outcome"] == "refused"


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(callcenter, desks) -> None:  # noqa: ANN001
    """A signed-in browser's POST without the page's CSRF token: 403, no seat state, no claim."""
    task_id = await operator_task(callcenter, phone="+8613900000021")
    desk = await desks()
    assert (await desk.post("/console/seat", csrf=False, state="available")).status_code == 403
    assert (await desk.post("/console/next", csrf=False)).status_code == 403
    async with callcenter.app.state.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM seats"))).scalar_one() == 0
    assert await operator_job_status(callcenter, task_id) == ["queued"]
    # With the token the same requests work: the refusal was the CSRF check.
    assert (await desk.post("/console/seat", state="available")).headers["location"] == "/console?m=state_saved"
    assert (await desk.post("/console/next")).headers["location"] == f"/console?task={task_id}&m=claimed"


async def test_a_supervisor_key_cannot_sign_in_to_the_operator_console(callcenter, desks) -> None:  # noqa: ANN001
    """Only operator (and admin) keys open the operator console; a supervisor's is refused with a reason."""
    desk = await desks("supervisor", "33")
    assert not desk.signed_in and desk.sign_in_answer.status_code == 401
    assert "此密钥的角色不能使用本控制台" in desk.sign_in_answer.text
    assert "shouhu_callcenter_session" not in desk.client.cookies
    resp = await desk.client.get("/console")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/sign-in")


async def test_an_operator_never_sees_another_units_task(callcenter, desks) -> None:  # noqa: ANN001
    """A task of unit 3302 is neither claimed by, shown to, called by nor closed by a 3301 operator."""
    task_id = await operator_task(callcenter, phone="+8613900000031", region="330203")
    mine = await desks("operator", "3301")
    await mine.post("/console/seat", state="available", phone="+8657187000031")
    assert (await mine.post("/console/next")).headers["location"] == "/console?m=empty"
    page = (await mine.client.get("/console", params={"task": task_id})).text
    assert "data-task-id" not in page and "****0031" not in page  # no card: the page shows only what I hold
    assert (await mine.post(f"/console/tasks/{task_id}/call")).headers["location"].endswith("m=not_claimed")
    refused = await mine.post(f"/console/tasks/{task_id}/disposition", disposition="dissuaded")
    assert refused.headers["location"].endswith("m=not_claimed")
    assert await operator_job_status(callcenter, task_id) == ["queued"]
    assert await callcenter.phone.calls("+8657187000031") == []
    # Its own unit's operator gets it.
    theirs = await desks("operator", "3302")
    await theirs.post("/console/seat", state="available")
    assert (await theirs.post("/console/next")).headers["location"] == f"/console?task={task_id}&m=claimed"


async def test_a_callback_needs_a_time_and_a_paused_seat_gets_no_new_task(callcenter, desks) -> None:  # noqa: ANN001
    """A callback without a time keeps the claim; with one it is queued then, and a seat that paused stays paused."""
    task_id = await operator_task(callcenter, phone="+8613900000041")
    await operator_task(callcenter, phone="+8613900000042")
    desk = await desks()
    await desk.post("/console/seat", state="available")
    await desk.post("/console/next")
    path = f"/console/tasks/{task_id}/disposition"
    assert (await desk.post(path, disposition="callback")).headers["location"].endswith("m=callback_time")
    assert await operator_job_status(callcenter, task_id) == ["running"]
    assert (await desk.post("/console/seat", state="paused")).headers["location"].endswith("m=pause_reason")
    await desk.post("/console/seat", state="paused", reason="午餐")
    # 12:00 in Beijing, two hours after the frozen clock's 10:00.
    resp = await desk.post(path, disposition="callback", callback_at="2026-11-21T12:00", note="下班后再联系")
    assert resp.headers["location"] == "/console?m=recorded"
    await callcenter.dispatcher.run_dispatcher_jobs()
    queued = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert [j["run_at"] for j in queued] == [callcenter.dispatcher.clock.now() + timedelta(hours=2)]
    page = (await desk.client.get("/console")).text
    assert 'id="seat-state">暂停' in page and 'data-task-id' not in page



async def test_the_desk_speaks_english_when_asked(callcenter, desks) -> None:  # noqa: ANN001
    """With the language switched to English, the card, the script and the dispositions are in English."""
    task_id = await operator_task(callcenter, phone="+8613900000061", region="330106")
    desk = await desks()
    await desk.post("/console/seat", state="available")
    await desk.post("/console/next")
    switched = await desk.client.get("/console/lang/en", params={"next": f"/console?task={task_id}"})
    page = (await desk.client.get(switched.headers["location"])).text
    assert f'data-task-id="{task_id}"' in page and "Call script" in page and "Dissuaded" in page
    assert "hang up and dial 96110 yourself" in page and "fake investment" in page
    assert "通话话术" not in page


def test_every_fraud_type_has_a_call_script_that_sends_citizens_to_96110() -> None:
    """Each fraud type has its own script in Chinese and English, telling the citizen to verify us via 96110."""
    for fraud_type in FRAUD_TYPES:
        zh, en = call_script(fraud_type, "+8613900000051", "zh"), call_script(fraud_type, "+8613900000051", "en")
        assert "96110" in "".join(zh["lines"]) and "96110" in "".join(en["lines"])
        assert "验证码" in zh["rule"] and "codes" in en["rule"]  # the operator is reminded never to ask for them
        assert not re.search(r"[\u4e00-\u9fff]", "".join(en["lines"]))
        assert zh["lines"][0].endswith("尾号0051的机主吗？")
    points = {call_script(f, "+8613900000051", "zh")["lines"][2] for f in FRAUD_TYPES}
    assert len(points) == len(FRAUD_TYPES)
