"""The sandbox page as the README's walkthrough uses it, in Chromium, against the whole running system: a bound
citizen's alert and its buttons, and a warning call ringing on the page (these take the README's pictures)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from shared.clock import Clock
from tests.conftest import warning
from tests.helpers.screenshots import readme_screenshot
from tests.helpers.system import make_keys, running_system

pytestmark = pytest.mark.slow
WAIT_S = 30.0


async def until(what: str, check: Any, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
    return value


async def task_outcome(api: httpx.AsyncClient, task_id: str) -> str | None:
    return (await api.get(f"/v1/tasks/{task_id}")).json()["outcome"]


async def test_a_bound_citizen_sees_the_alert_on_the_page_and_acknowledges_it_there(db_url: str, page: Any) -> None:
    """The page shows the alert with its four buttons in the citizen's chat; pressing 我已知晓 closes the task."""
    made = await make_keys(db_url, {"ingest": "33", "supervisor": "33"})
    async with running_system(db_url, Clock(), phone_time_scale=0.02) as urls, \
            httpx.AsyncClient(base_url=urls["sandbox"] + "/sandbox/telegram") as tg, \
            httpx.AsyncClient(base_url=urls["dispatcher"]) as api:
        chat = (await tg.post("/chats", json={"phone": "+8613900139000", "first_name": "王芳"})).json()["chat_id"]
        await tg.post(f"/chats/{chat}/send", json={"text": "/start"})
        await tg.post(f"/chats/{chat}/contact", json={"phone_number": "+8613900139000"})

        async def bound() -> bool:
            messages = (await tg.get(f"/chats/{chat}/messages", params={"from": "bot"})).json()["messages"]
            return any("绑定成功" in (m["text"] or "") for m in messages)

        await until("the bot confirms the binding", bound)
        posted = await api.post("/v1/warnings", headers={"Authorization": f"Bearer {made['ingest']}"},
                                json=warning(phone="139 0013 9000", signal="transfer_in_progress",
                                             fraud_type="impersonating_police"))
        task_id = posted.json()["task_id"]
        await page.goto(urls["sandbox"] + "/")
        await page.click("#chats li:has-text('王芳')")
        acknowledge = page.locator("#messages button", has_text="我已知晓")
        await acknowledge.wait_for(timeout=WAIT_S * 1000)
        buttons = await page.locator("#messages button").all_inner_texts()
        assert any("已经转账" in b for b in buttons) and any("回电" in b for b in buttons)
        assert any("不是我" in b for b in buttons)
        await readme_screenshot(page, "sandbox-citizen-page.png")
        await acknowledge.click()
        api.headers["Authorization"] = f"Bearer {made['supervisor']}"
        assert await until("the task closes as acknowledged", lambda: task_outcome(api, task_id)) == "acknowledged"


async def test_a_warning_call_rings_on_the_page_and_key_1_acknowledges(db_url: str, page: Any) -> None:
    """With "unscripted numbers ring here" ticked, the warning call rings on the page; answered, key 1 closes it."""
    made = await make_keys(db_url, {"ingest": "33", "supervisor": "33"})
    # Phone time at its real pace: a person clicks answer within the 30 s the call rings.
    async with running_system(db_url, Clock(), phone_time_scale=1.0) as urls, \
            httpx.AsyncClient(base_url=urls["dispatcher"]) as api:
        await page.goto(urls["sandbox"] + "/")
        await page.check("#ring-here")
        await page.locator("#toast", has_text="本页响铃").wait_for()
        posted = await api.post("/v1/warnings", headers={"Authorization": f"Bearer {made['ingest']}"},
                                json=warning(phone="137 0013 7000", signal="remote_control_app"))
        task_id = posted.json()["task_id"]
        await page.locator("#call-panel.ringing").wait_for(timeout=WAIT_S * 1000)
        assert "+8613700137000" in await page.inner_text("#call-panel")
        await readme_screenshot(page, "sandbox-incoming-call.png")
        await page.click("#call-answer")
        await page.locator("#gathering").wait_for(state="visible", timeout=WAIT_S * 1000)
        await page.click("#keypad button:text-is('1')")
        api.headers["Authorization"] = f"Bearer {made['supervisor']}"
        assert await until("the task closes as acknowledged", lambda: task_outcome(api, task_id)) == "acknowledged"
