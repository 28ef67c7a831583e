"""Emergencies on the supervisor console: the red banner in Chromium without a reload, the emergencies page, and
moving a payment stop from the case file (CSRF, forward only, audited)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import serve, sign_in, warning
from tests.console.test_supervisor_console import audit_actions, key_of, signed_in, task_row
from tests.helpers.screenshots import readme_screenshot


async def new_task(dispatcher, region: str = "330106", phone: str = "13800138000") -> str:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(region_code=region, phone=phone),
                                        headers=await dispatcher.headers("ingest", ""))
    return resp.json()["task_id"]


async def report_loss(dispatcher, task_id: str) -> None:  # noqa: ANN001
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                        headers=await dispatcher.headers("operator", "3301"))
    assert resp.status_code == 200 and resp.json()["action"] == "emergency", resp.text


@pytest.mark.slow
async def test_the_banner_appears_on_the_supervisor_console_without_a_reload(dispatcher, page) -> None:  # noqa: ANN001
    """A loss reported through the API shows as a red banner within 5 s on an open page; its link opens the case."""
    task_id = await new_task(dispatcher)
    async with serve(dispatcher.app, lifespan="off") as base:
        await sign_in(page, base, await key_of(dispatcher))
        banner = page.locator("#emergency-banner")
        assert await banner.is_hidden()
        await page.evaluate("window.__notReloaded = true")
        await report_loss(dispatcher, task_id)
        await page.wait_for_selector(f"#emergency-banner li[data-task-id='{task_id}']", timeout=5000)
        assert await page.evaluate("window.__notReloaded === true")
        text = await banner.inner_text()
        assert "紧急" in text and "地区 杭州市西湖区" in text and "刚刚" in text and "坐席通话" not in text
        assert "处置反馈" in text and "test-operator-3301" in text and "止付：已申请" in text
        await readme_screenshot(page, "supervisor-emergency-banner.png")
        await banner.locator("a").click()
        await page.wait_for_url(f"**/console/tasks/{task_id}")
        assert await page.inner_text("#stop-status") == "已申请"
        # From the case file: sent, then confirmed with the amount and the bank's reference.
        await page.fill("#stop-sent input[name=note]", "已发工行")
        async with page.expect_navigation():
            await page.click("#stop-sent button")
        assert await page.inner_text("#stop-status") == "已发送银行"
        await readme_screenshot(page.locator("#payment-stop"), "supervisor-payment-stop.png")
        await page.fill("#stop-confirmed input[name=amount_stopped]", "48,000")
        await page.fill("#stop-confirmed input[name=reference]", "ICBC-ZF-0042")
        async with page.expect_navigation():
            await page.click("#stop-confirmed button")
        assert await page.inner_text("#stop-status") == "止付成功"
        assert "48000.00" in await page.inner_text("#stop-result")
        assert "已闭环 · 已被骗" in await page.inner_text("#task-status")
        # Closed: the banner goes away by itself.
        await page.wait_for_selector("#emergency-banner", state="hidden", timeout=5000)
    task = await task_row(dispatcher, task_id)
    assert task["status"] == "closed" and task["outcome"] == "loss_reported"


async def test_payment_stop_forms_move_forward_only_and_are_audited(dispatcher) -> None:  # noqa: ANN001
    """The case file's forms: details, sent, confirmed; a skip or bad amount is a flash, not a change; CSRF is checked."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    async with serve(dispatcher.app, lifespan="off") as base, httpx.AsyncClient(base_url=base) as client:
        csrf = await signed_in(client, await key_of(dispatcher))
        path = f"/console/tasks/{task_id}/payment-stop"
        assert (await client.post(path, data={"status": "sent"})).status_code == 403  # no CSRF token
        skip = await client.post(path, data={"csrf_token": csrf, "status": "confirmed", "amount_stopped": "1",
                                             "reference": "R"})
        assert "error=stop.conflict&current=requested" in skip.headers["location"]
        page = (await client.get(skip.headers["location"])).text
        assert "止付当前为“已申请”" in page
        details = await client.post(path, data={"csrf_token": csrf, "bank": "中国银行", "amount_lost": "9,000",
                                                "transferred_at": "2026-11-21T09:40"})
        assert details.headers["location"].endswith("ok=stop.moved#payment-stop")
        await client.post(path, data={"csrf_token": csrf, "status": "sent"})
        bad = await client.post(path, data={"csrf_token": csrf, "status": "confirmed", "amount_stopped": "-3",
                                            "reference": "R"})
        assert "error=stop.invalid&field=amount_stopped" in bad.headers["location"]
        assert "止付金额（元）" in (await client.get(bad.headers["location"])).text
        listed = (await client.get("/console/emergencies")).text
        assert f'id="emergency-{task_id}"' in listed and "中国银行" in listed and "已发送银行" in listed
        done = await client.post(path, data={"csrf_token": csrf, "status": "confirmed", "amount_stopped": "9000",
                                             "reference": "BOC-1"})
        assert done.headers["location"].endswith("ok=stop.moved#payment-stop")
        assert "当前没有紧急事件" in (await client.get("/console/emergencies")).text
    actions = [a for a, _ in await audit_actions(dispatcher, task_id)]
    stop_steps = [a for a in actions if a.startswith("payment_stop.")]
    assert stop_steps == ["payment_stop.requested", "payment_stop.details", "payment_stop.sent",
                          "payment_stop.confirmed"]
    assert actions[-1] == "task.closed"
    assert (await task_row(dispatcher, task_id))["outcome"] == "loss_reported"


async def test_another_units_supervisor_sees_no_banner_and_no_stop(dispatcher) -> None:  # noqa: ANN001
    """A 3302 supervisor's banner feed and emergencies page do not show a 3301 emergency; its form answers 404."""
    task_id = await new_task(dispatcher, region="330106")
    await report_loss(dispatcher, task_id)
    async with serve(dispatcher.app, lifespan="off") as base, httpx.AsyncClient(base_url=base) as client:
        csrf = await signed_in(client, await key_of(dispatcher, unit="3302"))
        assert task_id not in (await client.get("/console/live/emergencies")).text
        assert task_id not in (await client.get("/console/emergencies")).text
        resp = await client.post(f"/console/tasks/{task_id}/payment-stop", data={"csrf_token": csrf, "status": "sent"})
        assert resp.status_code == 404
