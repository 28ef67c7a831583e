"""Issue 14's supervisor walkthrough in Chromium (zh-CN): every page shows words, never codes."""

from __future__ import annotations

import pytest

from shared.clock import LOCAL_TZ
from tests.conftest import serve, sign_in
from tests.console.test_supervisor_console import key_of
from tests.console.test_supervisor_findings import new_task, worked_then_breached
from tests.console.words import assert_all_words

HIDE_TIMELINE = "(hidden) => { document.getElementById('timeline').closest('section').hidden = hidden; }"

# The audit page names the command that prints a checkpoint (`shouhu audit checkpoint`): typed as it is.
CLI_COMMAND = ("audit", "checkpoint")

CHART = "Chart.getChart(document.getElementById('trend-chart'))"


@pytest.mark.slow
async def test_a_supervisor_walks_compliance_the_chart_a_breach_its_plan_the_audit_and_an_admin_a_key(
        dispatcher, page) -> None:  # noqa: ANN001
    """Compliance today with open work (not 0/0), the 30-day chart drawn and switchable per unit, a breach with
    who worked it last, its case file's plan, audit search by id, actor, action, time and a bad time, then an
    admin creates, sees and revokes a key; each page is checked for codes."""
    breached = await worked_then_breached(dispatcher)  # high, 330106: a robocall rang out, then the 2 h passed
    in_time = await new_task(dispatcher, "13900000041", signal="fraud_call_received", region_code="330206")
    await dispatcher.client.post(f"/v1/tasks/{in_time['task_id']}/feedback", json={"outcome": "dissuaded"},
                                 headers=await dispatcher.headers("officer", "33"))
    await new_task(dispatcher, "13900000042", region_code="330106")  # low, open, due in 72 h
    async with serve(dispatcher.app, lifespan="off") as base:
        await sign_in(page, base, await key_of(dispatcher))
        await assert_all_words(page)

        # Compliance today: decided 2 (1 in time, 1 breached), and the open task listed as open now.
        await page.click("nav >> text=时限达标")
        await page.select_option("select[name=days]", "1")
        await page.wait_for_url("**/console/compliance?days=1")
        total = await page.locator('#compliance tr[data-tier="all"]').inner_text()
        assert total.split()[1:4] == ["2", "1", "1"], total
        assert (await page.locator('#open-now tr[data-tier="all"]').inner_text()).split()[1] == "1"
        await assert_all_words(page)

        # The 30-day chart: Chart.js drew four lines (three tiers and the total) with today's point on each.
        await page.wait_for_function(CHART)
        lines = await page.evaluate(f"{CHART}.data.datasets.map(d => [d.label, d.data.length, d.data[29]])")
        assert lines == [["高风险", 30, 0.0], ["中风险", 30, 100.0], ["低风险", 30, None], ["合计", 30, 50.0]], lines
        painted = await page.evaluate(
            "(() => { const c = document.getElementById('trend-chart');"
            " const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 3; i < px.length; i += 4) { if (px[i] > 0) n++; } return [c.width, n]; })()")
        assert painted[0] > 300 and painted[1] > 1000, painted
        options = await page.locator("#trend-unit option").all_inner_texts()
        assert options == ["全辖区（浙江省 (33)）", "杭州市 (3301)", "宁波市 (3302)"], options
        await page.select_option("#trend-unit", "3302")
        assert await page.evaluate(f"{CHART}.data.datasets[1].data[29]") == 100.0  # Ningbo: the medium in time
        assert await page.evaluate(f"{CHART}.data.datasets[0].data[29]") is None

        # The breach, and who worked it last.
        await page.click("nav >> text=超时与升级")
        row = page.locator(f"#task-{breached}")
        text = await row.inner_text()
        assert "96110 自动语音外呼" in text and "超时于" in text
        await assert_all_words(page)

        # Its case file: who, what, the plan (escalated, deadline passed), the actions valid now.
        await row.locator("a", has_text="查看案件").click()
        await page.wait_for_url(f"**/console/tasks/{breached}")
        plan = page.locator("#plan")
        assert await plan.locator('tr[data-step="escalate"][data-state="done"]').count() == 1
        assert "已超过" in await plan.locator('tr[data-step="deadline"]').inner_text()
        assert "承办单位" in await plan.inner_text() and "民警/网格员" in await plan.inner_text()
        assert "正在转账" in await page.locator("#what").inner_text()
        assert await page.locator("#outcome-form select[name=outcome] option").count() == 6
        await page.evaluate(HIDE_TIMELINE, True)
        await assert_all_words(page)  # everything but the timeline: words only
        await page.evaluate(HIDE_TIMELINE, False)
        await assert_all_words(page)  # the timeline too, now in words

        # Audit search: the task's id prefix, then an actor, an action, a time range, and a bad time.
        await page.click("nav >> text=审计日志")
        await page.fill("#audit-filter input[name=id]", breached[:23])
        await page.click("#audit-filter button[type=submit]")
        assert "已定位任务" in await page.locator("#id-match").inner_text()
        await assert_all_words(page, allow=CLI_COMMAND)
        await page.fill("#audit-filter input[name=actor]", "test-ingest")
        await page.click("#audit-filter button[type=submit]")
        rows = page.locator("#audit tr[data-action]")
        assert await rows.count() == 1 and "建立任务" in await rows.first.inner_text()
        await page.fill("#audit-filter input[name=actor]", "")
        await page.select_option("#audit-filter select[name=action]", label="超过时限")
        start = dispatcher.clock.now().astimezone(LOCAL_TZ)
        await page.fill("#audit-filter input[name=from]", f"{start:%Y-%m-%d}T00:00")
        await page.fill("#audit-filter input[name=to]", f"{start:%Y-%m-%d}T23:59")
        await page.click("#audit-filter button[type=submit]")
        assert await rows.count() == 1 and "超过时限" in await rows.first.inner_text()
        await assert_all_words(page, allow=CLI_COMMAND)
        await page.goto(f"{base}/console/audit?from=yesterday")
        assert "“起始时间”不是有效的时间" in await page.locator("#filter-error").inner_text()
        await assert_all_words(page, allow=CLI_COMMAND)

        # An admin creates a key, sees it listed, and revokes it.
        await page.context.clear_cookies()
        await sign_in(page, base, await key_of(dispatcher, "admin", "33"))
        await page.click("nav >> text=密钥管理")
        await assert_all_words(page)
        await page.select_option("#create-key select[name=role]", label="督导")
        await page.fill("#create-key input[name=unit]", "3301")
        await page.fill("#create-key input[name=name]", "杭州值班督导")
        await page.click("#create-key button[type=submit]")
        secret = await page.locator("#secret").input_value()
        assert secret.startswith("shk_")
        key_row = page.locator(f"#key-{secret.split('_')[1]}")
        assert "杭州值班督导" in await key_row.inner_text() and "有效" in await key_row.inner_text()
        await assert_all_words(page, allow=(secret,))
        await key_row.locator("a.revoke").click()
        await assert_all_words(page)
        await page.click("#confirm-revoke button[type=submit]")
        await page.wait_for_url("**/console/keys?ok=keys.revoked")
        assert "已吊销" in await key_row.inner_text()
        await assert_all_words(page)
