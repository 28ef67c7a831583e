"""Visits in the browser: the officers' page (/field) with its own sign-in beside the supervisor console, claim and
report without JavaScript and on a phone-sized Chromium; the supervisor console's visits view."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shared.auth.service import create_key
from shared.db import transaction
from tests.conftest import console_sign_in, serve, warning
from tests.helpers.screenshots import readme_screenshot

PHONE_VIEWPORT = {"width": 375, "height": 812}
# A message key shown as itself (a text missing from the catalogue) looks like this.
RAW_KEY = re.compile(r"\b(?:field|visits?|signal|result|feedback|event|channel|col|region|gender|tried|fraud|tier|outcome)"
                     r"\.[a-z_.-]+")


def visible_text(html: str) -> str:
    """What a person reads on the page: the body without tags."""
    body = html[html.index("<body"):]
    return re.sub(r"<[^>]+>", " ", body)


async def new_key(dispatcher, role: str = "officer", unit: str = "330106", name: str = "王警官") -> str:  # noqa: ANN001
    async with transaction(dispatcher.sessionmaker) as session:
        _, full = await create_key(session, role=role, unit=unit, name=name)
    return full


async def task_with_visit(dispatcher, **fields: Any) -> tuple[str, str]:  # noqa: ANN001
    """A high-tier task about 张桂英, 67, with a visit an operator sent: (task_id, visit_id)."""
    record = warning(signal="transfer_in_progress", fraud_type="impersonating_police", amount_at_risk=80000,
                     subject={"name": "张桂英", "age": 67, "gender": "female"}, **fields)
    resp = await dispatcher.client.post("/v1/warnings", json=record, headers=await dispatcher.headers())
    task_id = resp.json()["task_id"]
    visit = await dispatcher.client.post(f"/v1/tasks/{task_id}/visits", json={"note": "她现在在工商银行"},
                                         headers=await dispatcher.headers("operator", "3301"))
    assert visit.status_code == 201, visit.text
    return task_id, visit.json()["visit_id"]


@pytest.fixture
async def browser_client(dispatcher) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    """A client of its own (its own cookie jar), as a second phone would be."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatcher.app),
                                 base_url="http://dispatcher") as client:
        yield client


async def field_sign_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign in through /field's form, as a phone without JavaScript would; returns the page's CSRF token."""
    form = await client.get("/field/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    resp = await client.post("/field/sign-in", data={"api_key": key, "csrf_token": token, "next": "/field"})
    assert resp.status_code == 303 and resp.headers["location"] == "/field", resp.text
    page = await client.get("/field")
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)


async def audit_count(dispatcher, task_id: str, action: str) -> int:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        return (await session.execute(text("SELECT count(*) FROM audit_log WHERE task_id = :t AND action = :a"),
                                      {"t": task_id, "a": action})).scalar_one()


# ---- over HTTP --------------------------------------------------------------------------------------------

async def test_field_has_its_own_sign_in_beside_the_supervisor_console(dispatcher, browser_client) -> None:  # noqa: ANN001
    """/field sends to /field/sign-in, /console to /console/sign-in; roles and sessions do not cross over."""
    client = browser_client
    resp = await client.get("/field")
    assert resp.status_code == 303 and resp.headers["location"] == "/field/sign-in?next=/field"
    resp = await client.get("/console/queue")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/sign-in")
    form = await client.get("/field/sign-in")
    assert form.status_code == 200 and 'action="/field/sign-in"' in form.text and "登录" in form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    supervisor = await new_key(dispatcher, role="supervisor", unit="33", name="督导")
    refused = await client.post("/field/sign-in", data={"api_key": supervisor, "csrf_token": token})
    assert refused.status_code == 401 and "角色" in refused.text
    await field_sign_in(client, await new_key(dispatcher))
    assert client.cookies.get("shouhu_field_session") and not client.cookies.get("shouhu_dispatcher_session")
    # The officer's session opens no supervisor page.
    resp = await client.get("/console")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/sign-in")


async def test_an_officer_claims_and_reports_on_the_page_without_javascript(dispatcher, browser_client) -> None:  # noqa: ANN001
    """Plain forms: the card shows who, where, what and what was tried; claim, then report once even if resubmitted."""
    task_id, visit_id = await task_with_visit(dispatcher)
    client = browser_client
    csrf = await field_sign_in(client, await new_key(dispatcher))
    page = (await client.get("/field")).text
    card = page[page.index(f'id="visit-{visit_id}"'):]
    for expected in ("张桂英 · 67 岁 · 女", 'href="tel:+8613800138000"', "138 0013 8000", "杭州市西湖区 (330106)",
                     "冒充公检法", "正在转账", "¥80,000", "剩 2 小时", "她现在在工商银行", "已尝试",
                     "收到预警，建立处置任务", "请求上门处置", "上门任务已派发", "认领，我去"):
        assert expected in card, expected
    assert "impersonating_police" not in card and "transfer_in_progress" not in card  # words, never codes
    assert not RAW_KEY.search(visible_text(page)), RAW_KEY.search(visible_text(page))
    # Without the CSRF token the claim is refused and changes nothing.
    assert (await client.post(f"/field/visits/{visit_id}/claim", data={})).status_code == 403
    claimed = await client.post(f"/field/visits/{visit_id}/claim", data={"csrf_token": csrf})
    assert claimed.status_code == 303 and claimed.headers["location"] == f"/field?ok=claimed#visit-{visit_id}"
    page = (await client.get(claimed.headers["location"])).text
    assert "已认领，请尽快上门" in page and "填报结果" in page and "劝阻成功" in page
    key = re.search(r'name="report_key" value="([^"]+)"', page).group(1)
    form = {"csrf_token": csrf, "report_key": key, "outcome": "dissuaded", "note": "已劝阻，未转账"}
    first = await client.post(f"/field/visits/{visit_id}/report", data=form)
    again = await client.post(f"/field/visits/{visit_id}/report", data=form)  # the browser resubmits
    assert first.headers["location"] == again.headers["location"] == f"/field?ok=reported#visit-{visit_id}"
    assert await audit_count(dispatcher, task_id, "visit.reported") == 1
    assert await audit_count(dispatcher, task_id, "task.closed") == 1
    done = (await client.get("/field")).text
    assert "今日已完成" in done and "劝阻成功" in done and "任务已闭环" in done
    # English on switch: the same page in words.
    switched = await client.get("/field/lang/en?next=/field")
    assert switched.status_code == 303 and switched.headers["location"] == "/field"
    english = (await client.get("/field")).text
    assert "Done today" in english and "dissuaded" in english and "task closed" in english
    assert not RAW_KEY.search(visible_text(english)), RAW_KEY.search(visible_text(english))


async def test_a_visit_someone_else_claimed_is_answered_on_the_page(dispatcher, browser_client) -> None:  # noqa: ANN001
    """A second officer's late claim lands back on the list with a message, not an error page."""
    _, visit_id = await task_with_visit(dispatcher)
    await dispatcher.client.post(f"/v1/visits/{visit_id}/claim",
                                 headers={"Authorization": f"Bearer {await new_key(dispatcher, name='李网格员')}"})
    csrf = await field_sign_in(browser_client, await new_key(dispatcher))
    resp = await browser_client.post(f"/field/visits/{visit_id}/claim", data={"csrf_token": csrf})
    assert resp.headers["location"] == f"/field?error=conflict#visit-{visit_id}"
    assert "已被他人认领" in (await browser_client.get(resp.headers["location"])).text
    bad = await browser_client.post(f"/field/visits/{visit_id}/report", data={"csrf_token": csrf, "outcome": "x"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "outcome"


async def test_an_emergency_shows_on_the_field_page_with_only_the_outcomes_it_allows(dispatcher,  # noqa: ANN001
                                                                                   browser_client) -> None:
    """A loss reported on a visit's task: the banner feed names it and links to the card; the card offers only
    已被骗 and 未找到本人, and a forced 劝阻成功 is answered with why."""
    task_id, visit_id = await task_with_visit(dispatcher)
    await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "loss_reported"},
                                 headers=await dispatcher.headers("operator", "3301"))
    csrf = await field_sign_in(browser_client, await new_key(dispatcher))
    banner = await browser_client.get("/field/live/emergencies")
    assert banner.status_code == 200 and f'data-task-id="{task_id}"' in banner.text
    assert f'href="/field#visit-{visit_id}"' in banner.text and "查看上门任务" in banner.text
    page = (await browser_client.get("/field")).text
    card = page[page.index(f'id="visit-{visit_id}"'):]
    assert "已被骗：请立即协助止付并报警" in card and 'id="emergency-banner"' in page
    await browser_client.post(f"/field/visits/{visit_id}/claim", data={"csrf_token": csrf})
    card = (await browser_client.get("/field")).text
    card = card[card.index(f'id="visit-{visit_id}"'):]
    assert re.findall(r'name="outcome" value="([a-z_]+)"', card) == ["loss_reported", "not_found"]
    forced = await browser_client.post(f"/field/visits/{visit_id}/report",
                                       data={"csrf_token": csrf, "outcome": "dissuaded", "report_key": "k1"})
    assert forced.headers["location"] == f"/field?error=emergency#visit-{visit_id}"
    assert "紧急止付中" in (await browser_client.get(forced.headers["location"])).text
    # Another district's officer sees no banner for it.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatcher.app),
                                 base_url="http://dispatcher") as other:
        await field_sign_in(other, await new_key(dispatcher, unit="330102", name="上城 李警官"))
        assert task_id not in (await other.get("/field/live/emergencies")).text


# ---- the supervisor's view ------------------------------------------------------------------------------

async def test_the_supervisor_sees_visits_per_unit_with_the_unclaimed_overdue_one_red(dispatcher, browser_client) -> None:  # noqa: ANN001
    """/console/visits: open, claimed, overdue per unit; an unclaimed visit past the deadline is a red row, in words."""
    _, late_visit = await task_with_visit(dispatcher)
    _, claimed_visit = await task_with_visit(dispatcher, phone="13911112222", region_code="330102")
    await dispatcher.client.post(f"/v1/visits/{claimed_visit}/claim",
                                 headers={"Authorization": f"Bearer {await new_key(dispatcher, unit='330102')}"})
    dispatcher.clock.advance(minutes=130)  # past both 2 h deadlines
    await dispatcher.run_dispatcher_jobs()
    supervisor = await new_key(dispatcher, role="supervisor", unit="3301", name="督导")
    resp, csrf = await console_sign_in(browser_client, supervisor)
    assert csrf, resp.text
    page = (await browser_client.get("/console/visits")).text
    assert 'href="/console/visits"' in page and "上门处置" in page  # in the supervisor nav
    late = page[page.index(f'id="visit-{late_visit}"'):]
    late = late[:late.index("</tr>")]
    assert 'class="overdue"' in late and "超时未认领" in late and 'title="330106">杭州市西湖区<' in late
    claimed = page[page.index(f'id="visit-{claimed_visit}"'):]
    claimed = claimed[:claimed.index("</tr>")]
    assert "已认领，上门中" in claimed and "王警官" in claimed and "已升级" in claimed
    units = page[page.index('id="units"'):page.index('id="visits"')]
    assert re.search(r'data-unit="330106".*?<td class="num">1</td>\s*<td class="num">0</td><td class="num bad">1</td>',
                     units, re.S)
    shown = re.sub(r"<[^>]+>", "", late[late.index(">") + 1:])
    assert "open" not in shown and "impersonating" not in shown  # states and types in words, never codes
    assert not RAW_KEY.search(visible_text(page)), RAW_KEY.search(visible_text(page))


async def test_a_supervisor_sends_a_visit_from_the_case_page(dispatcher, browser_client) -> None:  # noqa: ANN001
    """The case page's form sends officers now with a note; the visit appears in the view and on the timeline."""
    resp = await dispatcher.client.post("/v1/warnings", json=warning(signal="transfer_in_progress"),
                                        headers=await dispatcher.headers())
    task_id = resp.json()["task_id"]
    _, csrf = await console_sign_in(browser_client, await new_key(dispatcher, role="supervisor", unit="33"))
    case = (await browser_client.get(f"/console/tasks/{task_id}")).text
    assert 'action="/console/tasks/' + task_id + '/visits"' in case
    sent = await browser_client.post(f"/console/tasks/{task_id}/visits", data={"csrf_token": csrf,
                                                                               "note": "她在文三路工商银行"})
    assert sent.status_code == 303 and sent.headers["location"].startswith("/console/visits?ok=1#visit-")
    page = (await browser_client.get(sent.headers["location"])).text
    assert "已派警上门" in page and "她在文三路工商银行" in page
    assert await audit_count(dispatcher, task_id, "visit.created") == 1


# ---- on a phone-sized Chromium ----------------------------------------------------------------------------

@pytest.fixture
async def phone_page(chromium: Any) -> AsyncIterator[Any]:
    """A fresh browser context at a phone's size (375x812, touch), Chinese."""
    context = await chromium.new_context(viewport=PHONE_VIEWPORT, locale="zh-CN", has_touch=True, is_mobile=True,
                                         device_scale_factor=2)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    yield page
    await context.close()


@pytest.mark.slow
async def test_an_officer_signs_in_claims_and_reports_on_a_phone(dispatcher, phone_page) -> None:  # noqa: ANN001
    """At 375x812: sign in on /field, claim the visit, report it dissuaded (the task closes; buttons are large);
    then a loss reported in the unit shows as the red banner without a reload."""
    task_id, visit_id = await task_with_visit(dispatcher)
    page = phone_page
    async with serve(dispatcher.app, lifespan="off") as base:
        await page.goto(f"{base}/field")
        await page.wait_for_url("**/field/sign-in**")
        await page.fill("input[name=api_key]", await new_key(dispatcher))
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/field")
        card = page.locator(f"#visit-{visit_id}")
        assert "张桂英" in await card.inner_text()
        await readme_screenshot(page, "field-page.png", full_page=True)
        assert await card.locator("a.tel").get_attribute("href") == "tel:+8613800138000"
        claim = card.locator("button.claim")
        box = await claim.bounding_box()
        assert box["height"] >= 48 and box["width"] >= 300  # a thumb's target, the card's width
        # Nothing is wider than the phone: no sideways scrolling.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
        await claim.tap()
        await page.wait_for_url("**/field?ok=claimed**")
        card = page.locator(f"#visit-{visit_id}")
        await card.locator("details.report > summary").tap()
        await card.locator("textarea[name=note]").fill("已上门劝阻，当事人停止转账")
        await card.locator("button.outcome.dissuaded").tap()
        await page.wait_for_url("**/field?ok=reported**")
        assert "劝阻成功" in await page.locator("#done").inner_text()
        await page.screenshot(path="/tmp/field-page-done.png", full_page=True)
        # An emergency in the unit appears as the red banner without a reload, within 5 s.
        other = await dispatcher.client.post("/v1/warnings", json=warning(phone="13911112222"),
                                             headers=await dispatcher.headers())
        await page.evaluate("window.__notReloaded = true")
        await dispatcher.client.post(f"/v1/tasks/{other.json()['task_id']}/feedback", json={"outcome": "loss_reported"},
                                     headers=await dispatcher.headers("operator", "3301"))
        await page.wait_for_selector(f"#emergency-banner li[data-task-id='{other.json()['task_id']}']", timeout=5000)
        assert await page.evaluate("window.__notReloaded === true")
        assert "紧急" in await page.locator("#emergency-banner").inner_text()
    task = (await dispatcher.client.get(f"/v1/tasks/{task_id}",
                                        headers=await dispatcher.headers("supervisor", "33"))).json()
    assert task["status"] == "closed" and task["outcome"] == "dissuaded"
    reported = next(e for e in task["events"] if e["type"] == "visit.reported")
    assert reported["detail"]["note"] == "已上门劝阻，当事人停止转账" and reported["actor"].endswith(":王警官")
