"""Issue 14's case file: who, what, what was tried, the plan, and only the actions valid for the task's state."""

from __future__ import annotations

import re

from sqlalchemy import text

from tests.conftest import warning
from tests.console.test_supervisor_console import key_of, signed_in


async def open_task(dispatcher, **fields) -> str:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(**fields), headers=await dispatcher.headers())
    assert resp.status_code == 201, resp.text
    return resp.json()["task_id"]


def section(html: str, name: str) -> str:
    return re.search(rf'<section class="card" id="{name}">.*?</section>', html, re.S).group(0)


def offered(html: str) -> list[str]:
    form = re.search(r'<form [^>]*id="outcome-form".*?</form>', html, re.S)
    return re.findall(r'<option value="([a-z_]+)"', form.group(0)) if form else []


async def state_of(dispatcher, task_id: str) -> tuple:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        row = (await session.execute(text("SELECT status, outcome, closed_at FROM tasks WHERE id = :t"),
                                     {"t": task_id})).one()
        entries = (await session.execute(text("SELECT count(*) FROM audit_log WHERE task_id = :t"),
                                         {"t": task_id})).scalar_one()
    return (*row, entries)


async def test_the_case_file_says_who_what_the_plan_and_offers_every_outcome_on_an_open_task(dispatcher) -> None:  # noqa: ANN001
    """An open high task: the person (name, age, gender), both warnings in order with their source, the amount,
    the plan with the district's seats next and its time left, and all six outcomes offered."""
    task_id = await open_task(dispatcher, signal="fraud_call_received", region_code="330106", source="icbc",
                              subject={"name": "张桂英", "age": 67, "gender": "female"}, amount_at_risk=80000)
    dispatcher.clock.advance(minutes=3)
    again = await dispatcher.client.post("/v1/warnings", json=warning(signal="transfer_in_progress", source="alipay",
                                                                      region_code="330106"),
                                         headers=await dispatcher.headers())
    assert again.json()["task_id"] == task_id and again.json()["tier"] == "high"
    await signed_in(dispatcher.client, await key_of(dispatcher))
    page = (await dispatcher.client.get(f"/console/tasks/{task_id}")).text
    who = section(page, "who")
    assert "张桂英" in who and "67 岁" in who and "女" in who and "杭州市西湖区" in who
    what = section(page, "what")
    assert "¥80,000" in what and "虚假投资理财" in what
    assert what.index("来源：icbc") < what.index("来源：alipay")  # in the order they came
    assert "接到涉诈电话" in what and "正在转账" in what
    plan = section(page, "plan")
    seats = re.search(r'<tr class="plan-step next" data-step="channel".*?</tr>', plan, re.S).group(0)
    assert "杭州市西湖区 (330106) 坐席" in seats and "还剩 7 分钟" in seats and "下一步" in seats
    assert 'data-step="visit"' in plan and "民警/网格员" in plan and 'data-step="deadline"' in plan
    assert re.search(r'id="time-left"[^>]*>还剩 1 小时 57 分<', page)
    assert offered(page) == ["acknowledged", "dissuaded", "loss_reported", "unreachable", "false_positive",
                             "refused"]


async def test_an_emergency_offers_no_closing_outcome_and_refuses_one_posted_anyway(dispatcher) -> None:  # noqa: ANN001
    """After a loss report the case file offers no outcome (it closes with its payment stop); acknowledged
    posted anyway is a 409 naming the field and why, and the task, its outcome and its audit are unchanged."""
    task_id = await open_task(dispatcher, signal="fraud_call_received", region_code="330106")
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                        headers=await dispatcher.headers("officer", "3301"))
    assert resp.status_code == 200
    csrf = await signed_in(dispatcher.client, await key_of(dispatcher))
    page = (await dispatcher.client.get(f"/console/tasks/{task_id}")).text
    assert offered(page) == [] and 'id="outcome-form"' not in page and "紧急处置中" in section(page, "actions")
    assert 'data-step="payment_stop"' in section(page, "plan")
    before = await state_of(dispatcher, task_id)
    for outcome in ("acknowledged", "dissuaded"):
        resp = await dispatcher.client.post(f"/console/tasks/{task_id}/outcome",
                                            data={"outcome": outcome, "csrf_token": csrf})
        assert resp.status_code == 409
        assert "“结果”不能记录为" in resp.text and "紧急处置任务" in resp.text
    assert await state_of(dispatcher, task_id) == before


async def test_a_closed_task_offers_nothing_and_a_bad_outcome_changes_nothing(dispatcher) -> None:  # noqa: ANN001
    """A closed task shows no outcome form, no reassignment and no visit; another outcome posted is a 409, a
    made-up one a 422, and the recorded outcome stays."""
    task_id = await open_task(dispatcher)
    csrf = await signed_in(dispatcher.client, await key_of(dispatcher))
    resp = await dispatcher.client.post(f"/console/tasks/{task_id}/outcome",
                                        data={"outcome": "nonsense", "csrf_token": csrf})
    assert resp.status_code == 422 and "“结果”须从列表中选择" in resp.text
    resp = await dispatcher.client.post(f"/console/tasks/{task_id}/outcome",
                                        data={"outcome": "dissuaded", "note": "电话劝阻", "csrf_token": csrf})
    assert resp.status_code == 303 and resp.headers["location"].endswith("?ok=case.outcome_recorded#actions")
    page = (await dispatcher.client.get(resp.headers["location"])).text
    assert "结果已记录" in page and offered(page) == [] and "任务已闭环（劝阻成功）" in page
    assert "/reassign" not in page and 'id="send-visit"' not in page
    before = await state_of(dispatcher, task_id)
    assert before[:2] == ("closed", "dissuaded")
    resp = await dispatcher.client.post(f"/console/tasks/{task_id}/outcome",
                                        data={"outcome": "refused", "csrf_token": csrf})
    assert resp.status_code == 409 and "任务已闭环" in resp.text
    assert await state_of(dispatcher, task_id) == before


async def test_another_units_supervisor_cannot_see_or_close_the_task(dispatcher) -> None:  # noqa: ANN001
    """A supervisor of 3302 gets 404 for a 330106 task's case file and its outcome form, and it stays open."""
    task_id = await open_task(dispatcher)
    csrf = await signed_in(dispatcher.client, await key_of(dispatcher, "supervisor", "3302"))
    assert (await dispatcher.client.get(f"/console/tasks/{task_id}")).status_code == 404
    resp = await dispatcher.client.post(f"/console/tasks/{task_id}/outcome",
                                        data={"outcome": "dissuaded", "csrf_token": csrf})
    assert resp.status_code == 404
    assert (await state_of(dispatcher, task_id))[0] == "open"


async def test_in_english_the_plan_and_the_actions_are_english_words(dispatcher) -> None:  # noqa: ANN001
    """After the language switch the case file's plan, owners, states and the outcome choices are in English."""
    task_id = await open_task(dispatcher, signal="transfer_in_progress", region_code="330106")
    await signed_in(dispatcher.client, await key_of(dispatcher))
    resp = await dispatcher.client.get("/console/lang/en", params={"next": f"/console/tasks/{task_id}"})
    assert resp.status_code in (302, 303)
    page = (await dispatcher.client.get(f"/console/tasks/{task_id}")).text
    plan = section(page, "plan")
    assert "The plan" in plan and "seats of Xihu District, Hangzhou" in plan and ">next<" in plan
    assert "10 min left" in plan and "坐席" not in plan and "下一步" not in plan
    actions = section(page, "actions")
    assert "Record the outcome" in actions and ">dissuaded<" in actions
