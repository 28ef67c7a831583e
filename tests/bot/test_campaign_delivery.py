"""Publicity campaigns delivered by the real bot (aiogram over HTTP) to the Telegram sandbox: once per chat, within
Telegram's limits, after alerts, with a report; and the console's progress bar in a real headless Chromium."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import text

from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from services.dispatcher.campaigns.service import job_handlers
from shared import contracts
from shared.queue.service import enqueue
from shared.queue.worker import Handler, Worker
from tests.bot.conftest import eventually
from tests.conftest import serve, sign_in, warning
from tests.helpers.screenshots import readme_screenshot


def phone(i: int) -> str:
    return f"+86139000001{i:02d}"


async def citizens(bot, regions: list[str]) -> list[int]:  # noqa: ANN001
    """One citizen per region: a warning about them first (its alert finds no chat), then they bind the bot."""
    headers = await bot.dispatcher.headers("ingest", "")
    for i, region in enumerate(regions):
        resp = await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=phone(i), region_code=region),
                                                headers=headers)
        assert resp.status_code in (200, 201), resp.text
    await bot.deliver_alerts()  # "no channel": no alert is left waiting ahead of the campaign
    return [await bot.bind(phone(i)) for i in range(len(regions))]


async def schedule(bot, **body) -> str:  # noqa: ANN001
    """Schedule a campaign as the province's supervisor and run its start job (materialise the recipients)."""
    resp = await bot.dispatcher.client.post("/v1/campaigns", json={"name": "test", **body},
                                            headers=await bot.dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 201, resp.text
    await start_jobs(bot.dispatcher)
    return resp.json()["campaign_id"]


async def start_jobs(dispatcher) -> int:  # noqa: ANN001
    """Only the dispatcher's campaign jobs (the task plans' own jobs are not under test here)."""
    return await Worker(dispatcher.sessionmaker, queue="dispatcher", clock=dispatcher.clock,
                        handlers=job_handlers(clock=dispatcher.clock)).drain()


async def deliver(bot) -> int:  # noqa: ANN001
    """Run the bot's campaign chunks now, as its campaign worker would, then the dispatcher's progress checks."""
    ran = await Worker(bot.app.state.sessionmaker, queue="bot", clock=bot.dispatcher.clock,
                       handlers={contracts.CampaignChunk.KIND: Handler(bot.app.state.campaigns.deliver,
                                                                       transactional=False)}).drain()
    await start_jobs(bot.dispatcher)
    return ran


async def received(bot, chat_id: int, marker: str) -> list[str]:  # noqa: ANN001
    return await received_in(bot.sandbox, chat_id, marker)


async def report(bot, campaign_id: str) -> dict:  # noqa: ANN001
    resp = await bot.dispatcher.client.get(f"/v1/campaigns/{campaign_id}",
                                           headers=await bot.dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200
    return resp.json()


async def statuses(bot, campaign_id: str) -> dict[int, str]:  # noqa: ANN001
    async with bot.app.state.sessionmaker() as session:
        return dict((await session.execute(text("SELECT chat_id, status FROM campaign_recipients"
                                                " WHERE campaign_id = :c"), {"c": campaign_id})).all())


async def test_each_recipient_in_the_segment_gets_exactly_one_message_and_progress_reaches_100(bot) -> None:  # noqa: ANN001
    """Three chats in the region get the text once (with the 96110 line); the chat elsewhere gets nothing."""
    chats = await citizens(bot, ["330106", "330106", "330102", "330206"])
    campaign_id = await schedule(bot, text="MARK-A 警惕冒充客服退款。", segment={"region_prefix": "3301"})
    assert await deliver(bot) == 1
    for chat_id in chats[:3]:
        got = await received(bot, chat_id, "MARK-A")
        assert len(got) == 1 and "96110" in got[0]
    assert await received(bot, chats[3], "MARK-A") == []
    done = await report(bot, campaign_id)
    assert done["status"] == "done" and done["finished_at"]
    assert (done["report"]["total"], done["report"]["sent"], done["report"]["progress"]) == (3, 3, 1.0)
    assert set((await statuses(bot, campaign_id)).values()) == {"sent"}


async def test_a_template_reaches_each_chat_in_its_own_language(bot) -> None:  # noqa: ANN001
    """Template campaigns are sent in each chat's language (here one Chinese, one English chat)."""
    zh_chat, en_chat = await citizens(bot, ["330106", "330106"])
    await bot.sandbox.say(en_chat, "/lang")
    await eventually(lambda: _lang_is(bot, en_chat, "en"))
    await schedule(bot, template="fake_loan")
    await deliver(bot)
    assert len(await received(bot, zh_chat, "【反诈提醒】")) == 1
    english = await received(bot, en_chat, "[Anti-fraud notice]")
    assert len(english) == 1 and "96110" in english[0] and "deposit" in english[0]


async def _lang_is(bot, chat_id: int, lang: str) -> bool:  # noqa: ANN001
    async with bot.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT lang FROM bot_chats WHERE chat_id = :c"),
                                      {"c": chat_id})).scalar() == lang


async def test_retried_and_duplicated_jobs_never_send_twice_and_a_crash_mid_request_is_not_resent(bot) -> None:  # noqa: ANN001
    """A chunk run again, a start run again, and a row left "sending" by a crash: still at most one message each."""
    chats = await citizens(bot, ["330106", "330106", "330106"])
    campaign_id = await schedule(bot, text="MARK-B 不要给陌生人转账。")
    # An earlier run of the chunk died during the request to the first chat: its row is left "sending".
    async with bot.app.state.sessionmaker() as session, session.begin():
        await session.execute(text("INSERT INTO campaign_recipients (campaign_id, chat_id, lang, status)"
                                   " VALUES (:c, :chat, 'zh', 'sending')"), {"c": campaign_id, "chat": chats[0]})
    await deliver(bot)
    assert [len(await received(bot, c, "MARK-B")) for c in chats] == [0, 1, 1]
    first = await report(bot, campaign_id)
    assert (first["report"]["sent"], first["report"]["uncertain"], first["report"]["progress"]) == (2, 1, 1.0)
    assert first["status"] == "done"

    # Duplicates of everything: the start job and the chunk job, run again.
    async with bot.app.state.sessionmaker() as session, session.begin():
        now = bot.dispatcher.clock.now()
        chunk = contracts.CampaignChunk(campaign_id=campaign_id, texts={"zh": "MARK-B again", "en": "MARK-B again"},
                                        recipients=[contracts.CampaignRecipient(chat_id=c, lang="zh") for c in chats])
        await enqueue(session, [contracts.CampaignStart(campaign_id=campaign_id).job(run_at=now),
                                chunk.job(run_at=now), chunk.job(run_at=now)])
    await start_jobs(bot.dispatcher)
    assert await deliver(bot) == 2
    assert [len(await received(bot, c, "MARK-B")) for c in chats] == [0, 1, 1]
    again = await report(bot, campaign_id)
    assert again["report"] == first["report"]
    assert (await statuses(bot, campaign_id))[chats[0]] == "uncertain"


async def test_a_chat_that_blocked_the_bot_is_counted_blocked_and_unbound(bot) -> None:  # noqa: ANN001
    """403 from Telegram: the recipient is "blocked" in the report and the binding is deactivated."""
    chats = await citizens(bot, ["330106", "330106"])
    await bot.sandbox.call("POST", f"/chats/{chats[1]}/block", blocked=True)
    campaign_id = await schedule(bot, text="MARK-C 高收益投资是骗局。")
    await deliver(bot)
    result = await report(bot, campaign_id)
    assert (result["report"]["sent"], result["report"]["blocked"], result["report"]["failed"]) == (1, 1, 0)
    assert result["status"] == "done" and result["report"]["progress"] == 1.0
    assert result["report"]["errors"][0]["status"] == "blocked"
    assert (await bot.binding(chats[1])).active is False
    async with bot.app.state.sessionmaker() as session:
        unbound = (await session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'citizen.unbound'"))
                   ).scalar()
    assert unbound == 1
    # A later campaign no longer counts the blocked chat.
    later = await schedule(bot, text="MARK-D")
    assert (await report(bot, later))["preview_count"] == 1


async def test_alerts_go_first_and_both_keep_telegrams_limits(bot) -> None:  # noqa: ANN001
    """While an alert waits on the bot queue the campaign holds back; then both go out, with no 429 and no
    per-chat violation at the sandbox."""
    (chat_id,) = await citizens(bot, ["330106"])
    other = await bot.bind(phone(9))  # bound, no warning yet: not in the campaign's segment
    campaign_id = await schedule(bot, text="MARK-E 公检法不会电话办案。")
    await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=phone(9), fraud_type="impersonating_police"),
                                     headers=await bot.dispatcher.headers("ingest", ""))
    assert await bot.dispatcher.jobs(kind="bot.alert", status="queued")
    await deliver(bot)
    assert await received(bot, chat_id, "MARK-E") == []  # the alert is still queued: publicity waits
    assert await bot.deliver_alerts() == 1
    assert await received(bot, other, "96110")
    bot.dispatcher.clock.advance(seconds=2)  # the campaign chunk was put back for a second
    await deliver(bot)
    assert len(await received(bot, chat_id, "MARK-E")) == 1
    assert await received(bot, other, "MARK-E") == []
    assert (await report(bot, campaign_id))["report"]["sent"] == 1
    stats = await bot.sandbox.call("GET", "/stats")
    assert stats["per_chat_violations"] == 0 and stats["rejected_429"] == 0


async def test_a_campaign_cancelled_after_it_started_sends_nothing_more(bot) -> None:  # noqa: ANN001
    """Cancelling between the start and the bot's turn: queued recipients are never sent to."""
    chats = await citizens(bot, ["330106", "330106"])
    campaign_id = await schedule(bot, text="MARK-F")
    resp = await bot.dispatcher.client.post(f"/v1/campaigns/{campaign_id}/cancel",
                                            headers=await bot.dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200
    await deliver(bot)
    assert [await received(bot, c, "MARK-F") for c in chats] == [[], []]
    assert await statuses(bot, campaign_id) == {}  # the bot never took the chunk on
    assert (await report(bot, campaign_id))["report"]["sent"] == 0


# ---- in the browser, with the whole bot running ------------------------------------------------------------

async def test_supervisor_schedules_a_campaign_in_the_console_and_the_progress_bar_reaches_100(
        dispatcher, sandbox, page) -> None:  # noqa: ANN001
    """Sign in, preview a small segment, schedule it now; the bar reaches 100% and each chat got one message."""
    settings = BotSettings(DATABASE_URL=dispatcher.db_url, TELEGRAM_API_BASE=sandbox.base,
                           SHOUHU_WORKER_POLL_INTERVAL_S=0.2)
    bot_app = create_bot(settings, clock=dispatcher.clock)  # the real bot: polling, alert and campaign workers
    starter = Worker(dispatcher.sessionmaker, queue="dispatcher", clock=dispatcher.clock, poll_interval_s=0.2,
                     handlers=job_handlers(clock=dispatcher.clock))
    starter_task = asyncio.create_task(starter.run())
    try:
        async with bot_app.router.lifespan_context(bot_app):
            headers = await dispatcher.headers("ingest", "")
            regions = ["330106", "330106", "330206"]
            for i, region in enumerate(regions):
                await dispatcher.client.post("/v1/warnings", json=warning(phone=phone(i), region_code=region),
                                             headers=headers)
            await eventually(lambda: _no_alert_jobs(dispatcher), timeout_s=10)  # "no channel" before anyone binds
            chats = []
            for i in range(len(regions)):
                chat_id = await sandbox.citizen(phone(i))
                await sandbox.share_contact(chat_id, phone(i))
                await eventually(lambda c=chat_id: _bound(dispatcher, c), timeout_s=10)
                chats.append(chat_id)

            key = (await dispatcher.headers("supervisor", "33"))["Authorization"].removeprefix("Bearer ")
            async with serve(dispatcher.app, lifespan="off") as base:
                await sign_in(page, base, key)
                await page.goto(f"{base}/console/campaigns/new")
                await page.fill("input[name=name]", "西湖区 客服退款提醒")
                await page.fill("input[name=region_prefix]", "330106")
                await page.check("#choice-own")
                await page.fill("textarea[name=text]", "MARK-UI 近期冒充电商客服“退款”诈骗多发，请勿共享屏幕。")
                await page.click("#preview-button")
                await page.wait_for_selector("#preview-count[data-count='2']")
                await page.click("#schedule-button")
                await page.wait_for_url(re.compile(r".*/console/campaigns/[0-9a-f-]{36}\?ok=scheduled$"))
                await page.wait_for_selector("#progress[data-status='done'] .progress span[style='width:100%']",
                                             timeout=20_000)
                assert await page.inner_text("#progress [data-k='sent'] b") == "2"
                assert await page.inner_text("#percent") == "100%"
                await readme_screenshot(page, "campaign-console.png")
                await page.goto(f"{base}/console/campaigns")
                assert "西湖区 客服退款提醒" in await page.inner_text("#campaigns")
            for chat_id in chats[:2]:
                assert len(await received_in(sandbox, chat_id, "MARK-UI")) == 1
            assert await received_in(sandbox, chats[2], "MARK-UI") == []
    finally:
        starter.stop()
        await asyncio.wait_for(starter_task, 10)


async def _no_alert_jobs(dispatcher) -> bool:  # noqa: ANN001
    return not await dispatcher.jobs(kind="bot.alert")


async def _bound(dispatcher, chat_id: int) -> bool:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        return bool((await session.execute(text("SELECT active FROM chat_bindings WHERE chat_id = :c"),
                                           {"c": chat_id})).scalar())


async def received_in(sandbox, chat_id: int, marker: str) -> list[str]:  # noqa: ANN001
    return [m["text"] for m in await sandbox.messages(chat_id) if marker in (m.get("text") or "")]

