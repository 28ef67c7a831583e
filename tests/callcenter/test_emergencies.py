"""Emergencies at the callcenter: key 3 and a disposition open one, it is first in the seats' queue, the operator
gets the emergency script, dissuaded is refused, and the red banner appears on the operator console without a reload."""

from __future__ import annotations

import httpx
import pytest

from services.callcenter.console.views import call_script
from tests.callcenter.test_operator_console import Desk, key_of
from tests.callcenter.test_seats import operator_task
from tests.conftest import console_sign_in, sign_in, warning
from tests.helpers.screenshots import readme_screenshot

PHONE = "+8613800138000"


@pytest.fixture
async def api(callcenter):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        yield client


async def seat(callcenter, api, unit: str = "3301") -> dict:  # noqa: ANN001
    headers = await callcenter.dispatcher.headers("operator", unit)
    assert (await api.put("/v1/seat", json={"state": "available"}, headers=headers)).status_code == 200
    return headers


async def emergency(callcenter, task_id: str) -> dict:  # noqa: ANN001
    resp = await callcenter.dispatcher.client.get(f"/v1/emergencies/{task_id}",
                                                  headers=await callcenter.dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def report_loss(callcenter, task_id: str) -> None:  # noqa: ANN001
    resp = await callcenter.dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                                   headers=await callcenter.dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200 and resp.json()["action"] == "emergency", resp.text


async def test_key_3_opens_an_emergency_with_its_payment_stop(callcenter) -> None:
    """Key 3 on the automated call (sandbox phone): an emergency, its payment stop requested, reported via key 3."""
    await callcenter.phone.script(PHONE, "answer", ["3"])
    d = callcenter.dispatcher
    task_id = (await d.client.post("/v1/warnings", json=warning(phone=PHONE, signal="fraud_call_received"),
                                   headers=await d.headers())).json()["task_id"]
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    await d.run_dispatcher_jobs()
    found = await emergency(callcenter, task_id)
    assert found["tier"] == "high" and found["task_status"] == "in_progress"
    assert found["payment_stop"]["status"] == "requested" and found["payment_stop"]["reported_via"] == "key_3"
    assert found["payment_stop"]["reported_by"] == "citizen:phone:auto_call"


async def test_a_loss_disposition_opens_an_emergency_with_what_the_citizen_said(callcenter, api) -> None:
    """A seat records loss_reported with bank, account, amount and time: the emergency's payment stop holds them."""
    task_id = await operator_task(callcenter, phone="+8613900000101")
    headers = await seat(callcenter, api)
    assert (await api.post("/v1/queue/next", headers=headers)).json()["task_id"] == task_id
    body = {"disposition": "loss_reported", "note": "已让市民联系银行和110",
            "loss": {"bank": "中国工商银行", "account": "6222020000001234", "amount_lost": "50000",
                     "transferred_at": "2026-11-21T09:58:00+08:00"}}
    assert (await api.post(f"/v1/tasks/{task_id}/disposition", json=body, headers=headers)).status_code == 202
    await callcenter.dispatcher.run_dispatcher_jobs()
    stop = (await emergency(callcenter, task_id))["payment_stop"]
    assert stop["reported_via"] == "disposition" and stop["reported_by"].endswith("test-operator-3301")
    assert (stop["bank"], stop["account"], stop["amount_lost"]) == ("中国工商银行", "6222020000001234", "50000.00")
    assert stop["transferred_at"].startswith("2026-11-21T01:58:00")
    # A loss detail with another disposition, or a negative amount, is refused by name.
    bad = await api.post(f"/v1/tasks/{task_id}/disposition", headers=headers,
                         json={"disposition": "refused", "loss": {"bank": "x"}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "loss"
    bad = await api.post(f"/v1/tasks/{task_id}/disposition", headers=headers,
                         json={"disposition": "loss_reported", "loss": {"amount_lost": "-5"}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "loss.amount_lost"


async def test_the_emergency_is_claimed_before_older_high_tier_tasks(callcenter, api) -> None:
    """Two high-tier tasks wait; the newer one becomes an emergency: a seat's next claim returns it first."""
    older = await operator_task(callcenter, phone="+8613900000111", signal="screen_sharing")
    callcenter.dispatcher.clock.advance(minutes=5)
    newer = await operator_task(callcenter, phone="+8613900000112", signal="screen_sharing")
    callcenter.dispatcher.clock.advance(minutes=5)
    await report_loss(callcenter, newer)
    headers = await seat(callcenter, api)
    first = await api.post("/v1/queue/next", headers=headers)
    assert first.status_code == 200 and first.json()["task_id"] == newer
    assert (await api.post("/v1/queue/next", headers=headers, params={"held": "keep"})).json()["task_id"] == older


async def test_dissuaded_is_refused_on_an_emergency_and_the_claim_stays(callcenter, api) -> None:
    """A seat holding an emergency cannot record dissuaded (409 with the reason); loss_reported then goes through."""
    task_id = await operator_task(callcenter, phone="+8613900000121")
    await report_loss(callcenter, task_id)
    headers = await seat(callcenter, api)
    # The emergency's call replaced the waiting callback call: the task is in the queue once.
    claimed = (await api.post("/v1/queue/next", headers=headers)).json()
    assert claimed["task_id"] == task_id
    refused = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded"}, headers=headers)
    assert refused.status_code == 409 and "emergency" in refused.json()["detail"]
    mine = (await api.get("/v1/tasks", params={"mine": "true"}, headers=headers)).json()["items"]
    assert [t["task_id"] for t in mine] == [task_id]
    ok = await api.post(f"/v1/tasks/{task_id}/disposition", headers=headers,
                        json={"disposition": "loss_reported", "loss": {"bank": "建设银行"}})
    assert ok.status_code == 202
    await callcenter.dispatcher.run_dispatcher_jobs()
    found = await emergency(callcenter, task_id)
    assert found["task_status"] == "in_progress" and found["payment_stop"]["bank"] == "建设银行"


async def test_a_seat_on_the_task_keeps_it_when_the_loss_is_reported(callcenter, api) -> None:
    """The citizen reports the loss while a seat holds the task: that seat keeps it, now an emergency; no second call."""
    task_id = await operator_task(callcenter, phone="+8613900000125")
    headers = await seat(callcenter, api)
    assert (await api.post("/v1/queue/next", headers=headers)).json()["task_id"] == task_id
    await report_loss(callcenter, task_id)
    jobs = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator")
    assert [(j["status"], j["priority"], j["payload"]["emergency"]) for j in jobs] == [("running", 0, True)]
    assert (await api.post("/v1/queue/next", headers=await seat(callcenter, api, unit="33"))).status_code == 204


async def test_the_desk_shows_the_emergency_script_and_takes_the_transfer_details(callcenter) -> None:
    """An emergency on the desk: red tag, the emergency script, dissuaded disabled, the transfer's fields recorded."""
    task_id = await operator_task(callcenter, phone="+8613900000131")
    await report_loss(callcenter, task_id)
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        desk = Desk(client)
        await desk.sign_in(await key_of(callcenter, "operator", "3301"))
        await desk.post("/console/seat", state="available")
        assert (await desk.post("/console/next")).headers["location"] == f"/console?task={task_id}&m=claimed"
        page = (await client.get(f"/console?task={task_id}")).text
        assert 'data-emergency="1"' in page and "紧急：市民已转账" in page and "紧急止付话术" in page
        assert "哪家银行" in page and "拨打110" in page and "最近有没有人让您转账" not in page
        assert 'value="dissuaded" required disabled' in page and 'name="loss_bank"' in page
        resp = await desk.post(f"/console/tasks/{task_id}/disposition", disposition="loss_reported",
                               loss_bank="招商银行", loss_amount="3,000", loss_transferred_at="2026-11-21T09:50")
        assert resp.headers["location"] == "/console?m=recorded_wrap_up"  # recorded; the seat rests in wrap-up
    await callcenter.dispatcher.run_dispatcher_jobs()
    stop = (await emergency(callcenter, task_id))["payment_stop"]
    assert stop["bank"] == "招商银行" and stop["amount_lost"] == "3000.00"
    assert stop["transferred_at"].startswith("2026-11-21T01:50:00")


def test_the_emergency_script_asks_where_the_money_went_and_never_for_codes() -> None:
    """The emergency script asks bank, account, amount and time, sends the citizen to the bank and 110, asks no codes."""
    zh = call_script("fake_investment", "+8613900000051", "zh", emergency=True)
    en = call_script("fake_investment", "+8613900000051", "en", emergency=True)
    said = "".join(zh["lines"])
    for words in ("银行", "账户", "多少钱", "几点", "110"):
        assert words in said
    assert "密码" in zh["rule"] and "验证码" in zh["rule"] and "password" in en["rule"]
    assert "尾号0051" in zh["lines"][0] and "110" in "".join(en["lines"])
    asked = [line for line in zh["lines"] if "请告诉我" in line and "验证码" in line]
    assert asked == []  # codes appear only in the line saying we never ask for them


async def test_the_banner_feed_is_my_units_and_in_english_on_switch(callcenter) -> None:
    """The banner's feed lists my unit's emergencies only, in Chinese by default and English after the switch."""
    mine = await operator_task(callcenter, phone="+8613900000141", region="330106")
    theirs = await operator_task(callcenter, phone="+8613900000142", region="330203")
    await report_loss(callcenter, mine)
    await report_loss(callcenter, theirs)
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as client:
        assert (await client.get("/console/live/emergencies")).status_code == 401
        await console_sign_in(client, await key_of(callcenter, "operator", "3301"))
        zh = (await client.get("/console/live/emergencies")).text
        assert f'data-task-id="{mine}"' in zh and theirs not in zh
        assert '地区 <span class="region" title="330106">杭州市西湖区</span>' in zh and "刚刚" in zh and "按 N 领取" in zh and "止付：已申请" in zh
        await client.get("/console/lang/en")
        callcenter.dispatcher.clock.advance(minutes=3)
        en = (await client.get("/console/live/emergencies")).text
        assert 'region <span class="region" title="330106">Xihu District, Hangzhou</span>' in en and "3 min ago" in en and "payment stop: requested" in en
        assert "紧急" not in en


@pytest.mark.slow
async def test_the_banner_appears_on_the_operator_console_without_a_reload(callcenter, page) -> None:  # noqa: ANN001
    """A loss reported through the API shows as a red banner on an open operator console within 5 s, no reload."""
    task_id = await operator_task(callcenter, phone="+8613900000151")
    await sign_in(page, callcenter.base_url, await key_of(callcenter, "operator", "3301"))
    banner = page.locator("#emergency-banner")
    assert await banner.is_hidden()
    await page.evaluate("window.__notReloaded = true")
    await report_loss(callcenter, task_id)
    await page.wait_for_selector(f"#emergency-banner li[data-task-id='{task_id}']", timeout=5000)
    assert await page.evaluate("window.__notReloaded === true")
    text = await banner.inner_text()
    assert "紧急" in text and "地区 杭州市西湖区" in text and "刚刚" in text and "按 N 领取" in text
    assert await banner.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(198, 40, 40)"
    # Claimed with N, the banner links to the task in my hands.
    await page.select_option("#state-form select[name=state]", "available")
    async with page.expect_navigation():
        await page.click("#state-form button[type=submit]")
    async with page.expect_navigation():
        await page.keyboard.press("n")
    link = page.locator(f"#emergency-banner li[data-task-id='{task_id}'] a")
    await link.wait_for(timeout=5000)
    assert await link.get_attribute("href") == f"/console?task={task_id}"
    assert await page.locator("#task-card").get_attribute("data-task-id") == task_id
    await readme_screenshot(page, "operator-emergency.png")


async def test_an_emergencys_agreed_callback_stays_first_in_the_queue(callcenter, api) -> None:
    """A callback agreed on an emergency is queued at the emergency's priority, ahead of every tier."""
    task_id = await operator_task(callcenter, phone="+8613900000161")
    await report_loss(callcenter, task_id)
    headers = await seat(callcenter, api)
    await api.post("/v1/queue/next", headers=headers)
    when = callcenter.dispatcher.clock.now().replace(hour=5)  # 13:00 in Beijing
    resp = await api.post(f"/v1/tasks/{task_id}/disposition", headers=headers,
                          json={"disposition": "callback", "callback_at": when.isoformat()})
    assert resp.status_code == 202
    await callcenter.dispatcher.run_dispatcher_jobs()
    queued = await callcenter.dispatcher.jobs(task_id=task_id, kind="call.operator", status="queued")
    assert [(j["run_at"], j["priority"]) for j in queued] == [(when, 0)]
