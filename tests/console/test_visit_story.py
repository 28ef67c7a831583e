"""End to end against the sandbox: a citizen nobody reaches by phone is met by an officer, and the timeline tells it."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from shared.auth.service import create_key
from shared.db import transaction
from tests.bot.conftest import bot  # noqa: F401 - the bot against the Telegram sandbox
from tests.callcenter.conftest import callcenter  # noqa: F401 - the callcenter against the Twilio sandbox
from tests.conftest import T0, warning

PHONE = "+8613700137000"


def in_order(types: list[str], expected: list[str]) -> bool:
    """`expected` appears in `types` in this order (other entries may come between)."""
    position = 0
    for kind in types:
        if position < len(expected) and kind == expected[position]:
            position += 1
    return position == len(expected)


@pytest.mark.slow
async def test_a_citizen_who_never_answers_is_visited_and_the_timeline_reads_as_a_story(
        callcenter, bot, sandbox) -> None:  # noqa: ANN001, F811
    """High tier, no Telegram chat, the phone never answered: the plan sends officers, one reports dissuaded."""
    dispatcher = callcenter.dispatcher
    await callcenter.phone.script(PHONE, "no-answer")
    resp = await dispatcher.client.post("/v1/warnings", headers=await dispatcher.headers(), json=warning(
        phone=PHONE, signal="transfer_in_progress", fraud_type="impersonating_police", amount_at_risk=50000,
        subject={"name": "陈建国", "age": 72, "gender": "male"}))
    assert resp.status_code == 201 and resp.json()["tier"] == "high", resp.text
    task_id = resp.json()["task_id"]

    # The playbook's 45 minutes, as they pass: every automated call rings out unanswered and is retried.
    calls = 0
    while dispatcher.clock.now() < T0 + timedelta(minutes=45):
        assert await bot.deliver_alerts() == 0  # no chat bound: the bot has nothing to send
        placed = await callcenter.place_calls()
        if placed:
            calls += placed
            await callcenter.phone.ended(PHONE)
        await dispatcher.run_dispatcher_jobs()
        dispatcher.clock.advance(minutes=5)
    await dispatcher.run_dispatcher_jobs()
    assert calls == 4 and all(c["status"] == "no-answer" for c in await callcenter.phone.calls(PHONE))

    # The officer of the district signs in on /field and finds the visit, with what was tried.
    async with transaction(dispatcher.sessionmaker) as session:
        _, key = await create_key(session, role="officer", unit="330106", name="西湖派出所 王警官")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatcher.app),
                                 base_url="http://dispatcher") as phone:
        form = await phone.get("/field/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        await phone.post("/field/sign-in", data={"api_key": key, "csrf_token": token, "next": "/field"})
        page = (await phone.get("/field")).text
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
        visit_id = re.search(r'id="visit-([0-9a-f-]{36})"', page).group(1)
        card = page[page.index(f'id="visit-{visit_id}"'):]
        for expected in ("陈建国 · 72 岁", f'href="tel:{PHONE}"', "137 0013 7000", "杭州市西湖区 (330106)", "冒充公检法",
                         "正在转账", "¥50,000", "96110 自动语音外呼 · 第 4 次 · 无人接听", "按处置计划"):
            assert expected in card, expected
        claimed = await phone.post(f"/field/visits/{visit_id}/claim", data={"csrf_token": csrf})
        assert claimed.status_code == 303
        dispatcher.clock.advance(minutes=20)
        page = (await phone.get("/field")).text
        report_key = re.search(r'name="report_key" value="([^"]+)"', page).group(1)
        done = await phone.post(f"/field/visits/{visit_id}/report", data={
            "csrf_token": csrf, "report_key": report_key, "outcome": "dissuaded",
            "note": "在家中见到本人，正准备去银行转账，已劝阻"})
        assert done.headers["location"] == f"/field?ok=reported#visit-{visit_id}"

    task = (await dispatcher.client.get(f"/v1/tasks/{task_id}",
                                        headers=await dispatcher.headers("supervisor", "33"))).json()
    assert task["status"] == "closed" and task["outcome"] == "dissuaded" and task["breached"] is False
    types = [e["type"] for e in task["events"]]
    # Warning, four unanswered calls (the seats' call joins at 10 min), then the visit, and the loop closes.
    assert in_order(types, ["task.created", "task.channel_result", "task.channel_started", "task.visit_requested",
                            "visit.created", "visit.claimed", "visit.reported", "task.closed"]), types
    assert types[:types.index("task.visit_requested")].count("task.channel_result") == 4
    created = task["events"][0]
    assert "no bound Telegram chat: bot alert skipped" in created["detail"]["notes"]
    results = [e["detail"]["result"] for e in task["events"] if e["type"] == "task.channel_result"]
    assert results == ["no_answer"] * 4
    reported = next(e for e in task["events"] if e["type"] == "visit.reported")
    assert reported["actor"].endswith(":西湖派出所 王警官") and reported["detail"]["within_deadline"] is True
    assert types.index("visit.reported") < types.index("task.closed") == len(types) - 1
