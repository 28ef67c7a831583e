"""Seat work in a real Chromium (zh-CN), keyboard only: claim, call, hang up, disposition, wrap-up, available;
the seat board beside it; one task at a time (N with a task in hand asks first)."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from playwright.async_api import expect

from tests.callcenter.test_operator_console import key_of, operator_job_status, task_row
from tests.callcenter.test_seats import operator_task
from tests.conftest import sign_in
from tests.console.words import assert_all_words
from tests.helpers.screenshots import readme_screenshot

WRAP_UP_S = 5
# Set to a folder to save screenshots of the desk on a call and of the seat board (for the docs).
SCREENSHOTS = os.environ.get("SHOUHU_SEAT_SCREENSHOTS")


async def seat_phone(callcenter, key: str, phone: str) -> None:  # noqa: ANN001
    """The seat's own phone, set once through the API (the walkthrough itself is the operator's shift)."""
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as api:
        resp = await api.put("/v1/seat", json={"state": "offline", "phone": phone},
                             headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200, resp.text


async def stays_on_the_line(callcenter, number: str) -> None:  # noqa: ANN001
    """The citizen answers and talks until the seat hangs up (the sandbox's longest call)."""
    await callcenter.phone.call("PUT", f"/numbers/{number}", behaviour="answer", digits=[], ring_s=0.1,
                                hangup_after_s=100_000)


def board_state(board, *, me: bool = True):  # noqa: ANN001, ANN201
    return board.locator("#seat-board tr.me [data-state]" if me else "#seat-board [data-state]")


@pytest.mark.callcenter_settings(SHOUHU_SEAT_WRAP_UP_S=WRAP_UP_S)
async def test_an_operator_claims_calls_hangs_up_disposes_and_is_available_again_by_keyboard(
        callcenter, page) -> None:  # noqa: ANN001
    """N claims (处置中), C calls (通话中, the timer runs), H hangs up, 1 + Enter records (话后整理), then 空闲 after
    the wrap-up time; the seat board shows each state live, and neither page shows a code."""
    citizen, desk_phone = "+8613900000711", "+8657187000711"
    await callcenter.phone.script(desk_phone, "answer")
    await stays_on_the_line(callcenter, citizen)
    task_id = await operator_task(callcenter, phone=citizen)
    base, key = callcenter.base_url, await key_of(callcenter, "operator", "3301")
    await seat_phone(callcenter, key, desk_phone)

    await sign_in(page, base, key)
    state = page.locator("#seat-state")
    await expect(state).to_have_text("离线")
    board = await page.context.new_page()
    await board.goto(f"{base}/console/seats")
    await expect(board_state(board)).to_have_text("离线")
    await assert_all_words(board)

    async with page.expect_navigation():
        await page.keyboard.press("a")  # back to available
    await expect(state).to_have_text("空闲")
    await expect(board_state(board)).to_have_text("空闲")  # the board refreshes by itself

    async with page.expect_navigation():
        await page.keyboard.press("n")
    assert await page.locator("#task-card").get_attribute("data-task-id") == task_id
    await expect(state).to_have_text("处置中")  # holding a task: not free
    await expect(board_state(board)).to_have_text("处置中")
    await assert_all_words(page)

    async with page.expect_navigation():
        await page.keyboard.press("c")
    await expect(page.locator(".flash")).to_contain_text("正在呼叫")
    await expect(page.locator("#hangup-form button")).to_be_visible()
    live = page.locator("#live-call[data-state=live]")
    await expect(live).to_contain_text("通话中")  # the seat answered, the citizen is bridged: the timer runs
    await expect(page.locator("#call-timer")).to_have_text(re.compile(r"^\d+:\d\d$"))
    await expect(state).to_have_text("通话中")
    await expect(board_state(board)).to_have_text("通话中")
    legs = await callcenter.phone.calls(citizen)
    assert len(legs) == 1 and legs[0]["status"] == "in-progress"
    await readme_screenshot(page, "operator-on-call.png")  # SHOUHU_SCREENSHOTS=1 (make screenshots)
    await readme_screenshot(board, "seat-board.png")
    await assert_all_words(page)

    async with page.expect_navigation():
        await page.keyboard.press("h")
    await expect(page.locator(".flash")).to_contain_text("已挂断")
    ended = await callcenter.phone.ended(citizen)
    assert ended["status"] == "completed"
    seat_leg = await callcenter.phone.ended(desk_phone)
    assert seat_leg["status"] == "completed" and seat_leg["ended_by"] == "api"  # our hang-up, not the citizen's
    await expect(state).to_have_text("处置中")  # off the phone, the task still in hand
    await expect(page.locator("#live-call[data-state=ended]")).to_contain_text("通话已结束")
    await expect(page.locator("#hangup-form")).to_have_count(0)
    await expect(page.locator("#call-form button")).to_be_visible()  # C could call again

    await page.keyboard.press("1")
    assert await page.is_checked("input[name=disposition][value=dissuaded]")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await expect(page.locator(".flash")).to_contain_text("话后整理结束后可领取下一条")
    await expect(state).to_have_text("话后整理")
    await expect(page.locator("#wrap-up-left")).to_contain_text(f"剩 {WRAP_UP_S} 秒")
    await expect(board_state(board)).to_have_text("话后整理")
    await assert_all_words(page)
    await assert_all_words(board)

    callcenter.dispatcher.clock.advance(seconds=WRAP_UP_S)  # the services' clock: the wrap-up time is over
    await expect(state).to_have_text("空闲")  # the desk polls its state: no reload
    await expect(board_state(board)).to_have_text("空闲")
    await callcenter.dispatcher.run_dispatcher_jobs()
    closed = await task_row(callcenter, task_id)
    assert closed["status"] == "closed" and closed["outcome"] == "dissuaded"


async def test_n_with_a_task_in_hand_asks_first_and_keeps_or_returns_it(callcenter, page) -> None:  # noqa: ANN001
    """N while holding a task claims nothing and asks; K keeps it; N then R returns it to the queue and claims the
    next one; the shortcuts are listed on the page."""
    first = await operator_task(callcenter, phone="+8613900000721", signal="screen_sharing")  # high: claimed first
    second = await operator_task(callcenter, phone="+8613900000722")
    base, key = callcenter.base_url, await key_of(callcenter, "operator", "3301")
    await sign_in(page, base, key)
    shortcuts = await page.inner_text("#shortcuts")
    for words in ("领取下一条任务", "呼叫市民", "挂断当前通话", "选择处置结果", "提交处置结果", "暂停", "恢复空闲"):
        assert words in shortcuts
    async with page.expect_navigation():
        await page.keyboard.press("a")
    async with page.expect_navigation():
        await page.keyboard.press("n")
    card = page.locator("#task-card")
    assert await card.get_attribute("data-task-id") == first

    async with page.expect_navigation():
        await page.keyboard.press("n")
    dialog = page.locator("dialog#holding")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("您手上已有一条任务")
    assert await operator_job_status(callcenter, second) == ["queued"]  # nothing claimed behind my back
    await assert_all_words(page)
    if SCREENSHOTS:
        await page.screenshot(path=os.path.join(SCREENSHOTS, "operator-holding.png"))
    await page.keyboard.press("k")
    await expect(dialog).to_be_hidden()
    assert await card.get_attribute("data-task-id") == first

    async with page.expect_navigation():
        await page.keyboard.press("n")
    await expect(dialog).to_be_visible()
    async with page.expect_navigation():
        await page.keyboard.press("r")
    await expect(page.locator(".flash")).to_contain_text("已退回原任务")
    assert await card.get_attribute("data-task-id") == second
    assert await operator_job_status(callcenter, first) == ["queued"]  # back in the queue for any seat
    assert [await a.inner_text() for a in await page.locator("#mine a").all()] == ["虚假投资理财"]
