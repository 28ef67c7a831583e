"""The bot end to end: real aiogram over HTTP against the Telegram sandbox, results flowing to the dispatcher."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from services.bot.alerts.service import alert_keyboard, alert_text, callback_data
from services.bot.texts import templates
from tests.bot.conftest import eventually
from tests.conftest import warning

PHONE = "+8613800138000"


async def last_bot_text(bot, chat_id: int) -> str:  # noqa: ANN001
    messages = await bot.sandbox.messages(chat_id)
    return messages[-1]["text"] if messages else ""


async def alert_for(bot, chat_id: int, **fields) -> tuple[dict, dict]:  # noqa: ANN001
    """Post a warning about the bound citizen, deliver the bot jobs, return (answer, the alert message)."""
    answer = (await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=PHONE, **fields),
                                               headers=await bot.dispatcher.headers())).json()
    assert await bot.deliver_alerts() >= 1
    messages = await bot.sandbox.messages(chat_id)
    alert = next(m for m in reversed(messages) if m.get("reply_markup") and "inline_keyboard" in m["reply_markup"])
    return answer, alert


async def task_of(bot, task_id: str) -> dict:  # noqa: ANN001
    await bot.dispatcher.run_dispatcher_jobs()
    resp = await bot.dispatcher.client.get(f"/v1/tasks/{task_id}",
                                           headers=await bot.dispatcher.headers("supervisor", ""))
    return resp.json()


# ---- binding -----------------------------------------------------------------------------------------

async def test_start_offers_a_share_contact_button_and_says_how_to_verify(bot) -> None:
    """/start explains who we are, how to verify (96110), and asks for the citizen's own number."""
    chat_id = await bot.sandbox.citizen()
    await bot.sandbox.say(chat_id, "/start from-sms-1234")
    reply = await eventually(lambda: bot.sandbox.messages(chat_id))
    assert "96110" in reply[-1]["text"]
    keyboard = (await bot.sandbox.call("GET", f"/chats/{chat_id}/messages"))["reply_keyboard"]
    assert any(b.get("request_contact") for row in keyboard["keyboard"] for b in row)


async def test_own_contact_binds_the_chat_to_the_normalised_phone(bot) -> None:
    """Sharing one's own contact binds the chat, with the number in E.164."""
    chat_id = await bot.sandbox.citizen()
    await bot.sandbox.share_contact(chat_id, "138 0013 8000")
    binding = await eventually(lambda: bot.binding(chat_id))
    assert binding.phone == PHONE and binding.active is True
    assert "8000" in await eventually(lambda: last_bot_text(bot, chat_id))


async def test_someone_elses_contact_is_refused(bot) -> None:
    """A forwarded contact card (another user's) binds nothing and gets a clear reply."""
    chat_id = await bot.sandbox.citizen()
    await bot.sandbox.share_contact(chat_id, PHONE, user_id=chat_id + 99)
    reply = await eventually(lambda: last_bot_text(bot, chat_id))
    assert "本人" in reply
    assert await bot.binding(chat_id) is None


async def test_stop_between_warning_and_delivery_finds_no_channel_and_a_call_follows(bot) -> None:
    """/stop ends all messages: an alert already queued reports "no channel" and the dispatcher calls instead."""
    chat_id = await bot.bind()
    answer = (await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=PHONE),
                                               headers=await bot.dispatcher.headers())).json()
    assert await bot.dispatcher.jobs(task_id=answer["task_id"], kind="bot.alert")  # queued while still bound
    await bot.sandbox.say(chat_id, "/stop")
    await eventually(lambda: _inactive(bot, chat_id))
    before = len(await bot.sandbox.messages(chat_id))
    await bot.deliver_alerts()
    assert len(await bot.sandbox.messages(chat_id)) == before
    task = await task_of(bot, answer["task_id"])
    assert any(e["type"] == "task.channel_result" and e["detail"]["result"] == "no_channel" for e in task["events"])
    assert await bot.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto")


async def _inactive(bot, chat_id: int) -> bool:  # noqa: ANN001
    binding = await bot.binding(chat_id)
    return binding is not None and binding.active is False


# ---- alert texts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraud_type", ["impersonating_police", "fake_investment", "pig_butchering",
                                        "fake_customer_service"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_alert_fits_the_fraud_type_tells_how_to_verify_and_asks_for_nothing(fraud_type: str, lang: str) -> None:
    """Each alert is its fraud type's text, names 96110, is short, and never asks for money or codes."""
    body = alert_text(fraud_type, lang)
    assert templates()["alerts"][fraud_type][lang] in body
    assert "96110" in body
    assert len(body) < 400
    for request in ("请提供", "请告诉", "请输入", "请发送验证码", "please send", "please provide", "tell us your"):
        assert request not in body.lower()
    keyboard = alert_keyboard(__import__("uuid").uuid4(), lang)
    assert len(keyboard.inline_keyboard) == 4
    assert all(len(b.callback_data.encode()) <= 64 for row in keyboard.inline_keyboard for b in row)


async def test_alert_reaches_a_bound_citizen_in_their_language(bot) -> None:
    """A warning about a bound citizen becomes an alert with four buttons, in the chat's language."""
    chat_id = await bot.bind()
    await bot.sandbox.say(chat_id, "/lang")
    await eventually(lambda: _lang_is(bot, chat_id, "en"))
    _, alert = await alert_for(bot, chat_id, fraud_type="impersonating_police", signal="transfer_in_progress")
    assert "police" in alert["text"] and "96110" in alert["text"]
    labels = [b["text"] for row in alert["reply_markup"]["inline_keyboard"] for b in row]
    assert labels[0].startswith("✅ I understand")


async def _lang_is(bot, chat_id: int, lang: str) -> bool:  # noqa: ANN001
    async with bot.app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT lang FROM bot_chats WHERE chat_id = :c"),
                                      {"c": chat_id})).scalar() == lang


# ---- buttons -------------------------------------------------------------------------------------------

async def press(bot, chat_id: int, alert: dict, index: int) -> dict:  # noqa: ANN001
    button = alert["reply_markup"]["inline_keyboard"][index][0]
    query_id = await bot.sandbox.press(chat_id, alert["message_id"], button["callback_data"])
    return await eventually(lambda: _answered(bot, query_id))


async def _answered(bot, query_id: str) -> dict | None:  # noqa: ANN001
    answer = await bot.sandbox.callback(query_id)
    return answer if answer["answered"] else None


async def test_i_understand_closes_the_task_and_edits_the_alert(bot) -> None:
    """Pressing "I understand" closes the task as acknowledged and the message shows what was recorded."""
    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id)
    reply = await press(bot, chat_id, alert, 0)
    assert reply["text"]
    edited = await eventually(lambda: _edited(bot, chat_id, alert["message_id"]))
    assert "已记录" in edited["text"] and not (edited.get("reply_markup") or {}).get("inline_keyboard")
    task = await task_of(bot, answer["task_id"])
    assert task["status"] == "closed" and task["outcome"] == "acknowledged"


async def _edited(bot, chat_id: int, message_id: int) -> dict | None:  # noqa: ANN001
    for m in await bot.sandbox.messages(chat_id):
        if m["message_id"] == message_id and m["edited"]:
            return m
    return None


async def test_already_transferred_raises_an_emergency(bot) -> None:
    """"I already transferred money" makes the task high tier with an operator call and a payment stop."""
    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id)
    await press(bot, chat_id, alert, 1)
    task = await task_of(bot, answer["task_id"])
    assert task["tier"] == "high" and task["emergency_at"] and task["status"] == "in_progress"
    assert "payment_stop.requested" in [e["type"] for e in task["events"]]


async def test_an_acknowledgement_on_the_call_edits_the_open_alert_and_no_reminder_follows(bot) -> None:
    """Key 1 on the robocall closes the task; the alert still showing its buttons says it was handled, without
    them, and no further alert goes out for the task."""
    from shared import contracts
    from shared.queue.service import enqueue

    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id, signal="fraud_call_received")
    async with bot.dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [contracts.ChannelResult(
            task_id=answer["task_id"], channel="auto_call", attempt=1, result="answered",
            feedback="acknowledged").to_job(now=bot.dispatcher.clock.now())])
    task = await task_of(bot, answer["task_id"])
    assert task["status"] == "closed" and task["outcome"] == "acknowledged"
    assert await bot.deliver_alerts() == 1  # the stop order
    edited = await eventually(lambda: _edited(bot, chat_id, alert["message_id"]))
    assert "已处理" in edited["text"] and "96110" in edited["text"]
    assert not (edited.get("reply_markup") or {}).get("inline_keyboard")
    before = len(await bot.sandbox.messages(chat_id))
    bot.dispatcher.clock.advance(hours=30)  # every later step of the medium plan is due: none may alert again
    await bot.dispatcher.run_dispatcher_jobs()
    assert await bot.deliver_alerts() == 0
    assert len(await bot.sandbox.messages(chat_id)) == before


@pytest.mark.parametrize(("index", "event"), [(2, "task.callback_requested"), (3, "task.not_me")])
async def test_call_me_and_not_me_queue_an_operator_call(bot, index: int, event: str) -> None:
    """"Please call me" and "this is not me" put a person on the phone."""
    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id)
    await press(bot, chat_id, alert, index)
    task = await task_of(bot, answer["task_id"])
    assert event in [e["type"] for e in task["events"]]
    assert await bot.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")


async def test_pressing_twice_records_once(bot) -> None:
    """A second press on the same alert is answered but records nothing more."""
    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id)
    await press(bot, chat_id, alert, 2)
    # A double tap: the second press comes from the keyboard as the phone still showed it.
    data = alert["reply_markup"]["inline_keyboard"][2][0]["callback_data"]
    second = await eventually(lambda: _answered_raw(bot, chat_id, alert["message_id"], data))
    assert "已记录过" in second["text"]
    task = await task_of(bot, answer["task_id"])
    assert [e["type"] for e in task["events"]].count("task.callback_requested") == 1
    assert len(await bot.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator")) == 1


async def _answered_raw(bot, chat_id: int, message_id: int, data: str) -> dict:  # noqa: ANN001
    query_id = await _press_raw(bot, chat_id, message_id, data)
    return await eventually(lambda: _answered(bot, query_id))


async def test_a_press_for_another_chats_task_is_refused_and_audited(bot) -> None:
    """A button whose task was not sent to this chat changes nothing and leaves an audit entry."""
    victim = await bot.bind()
    answer, alert = await alert_for(bot, victim)
    stranger = await bot.sandbox.citizen()
    await bot.sandbox.say(stranger, "/help")
    await eventually(lambda: bot.sandbox.messages(stranger))
    # The stranger's own message, with the victim's button data forged onto it.
    own = (await bot.sandbox.messages(stranger))[-1]
    own_id = own["message_id"]
    forged = alert["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    query_id = await _press_raw(bot, stranger, own_id, forged)
    reply = await eventually(lambda: _answered(bot, query_id))
    assert "不是发给您" in reply["text"]
    task = await task_of(bot, answer["task_id"])
    assert task["status"] != "closed"
    async with bot.app.state.sessionmaker() as session:
        refused = (await session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'bot.press_refused'"
                                              " AND task_id = :t"), {"t": answer["task_id"]})).scalar_one()
    assert refused == 1


async def _press_raw(bot, chat_id: int, message_id: int, data: str) -> str:  # noqa: ANN001
    """Press with arbitrary callback data (a forged or stale button), as a modified client could."""
    return (await bot.sandbox.call("POST", f"/chats/{chat_id}/press", message_id=message_id, data=data,
                                   forge=True))["callback_query_id"]


# ---- Telegram's limits and failures ---------------------------------------------------------------

async def test_a_429_is_waited_out_and_the_alert_still_delivered(bot) -> None:
    """When Telegram answers 429, the bot waits retry_after and delivers; nothing is lost."""
    await bot.sandbox.call("POST", "/limits", global_per_s=1, per_chat_per_s=1)
    chats = [await bot.bind(phone=f"+861380013800{i}") for i in range(3)]
    for i, _ in enumerate(chats):
        await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=f"+861380013800{i}"),
                                         headers=await bot.dispatcher.headers())
    started = time.monotonic()
    await bot.deliver_alerts()
    assert time.monotonic() - started >= 1.0
    for chat_id in chats:
        assert any("inline_keyboard" in (m.get("reply_markup") or {}) for m in await bot.sandbox.messages(chat_id))
    stats = await bot.sandbox.call("GET", "/stats")
    assert stats["rejected_429"] >= 1 and stats["per_chat_violations"] == 0


async def test_a_blocked_bot_falls_back_to_a_call(bot) -> None:
    """403 (the citizen blocked the bot): binding marked inactive, the dispatcher queues a call instead."""
    chat_id = await bot.bind()
    await bot.sandbox.call("POST", f"/chats/{chat_id}/block", blocked=True)
    answer = (await bot.dispatcher.client.post("/v1/warnings", json=warning(phone=PHONE),
                                               headers=await bot.dispatcher.headers())).json()
    calls_before = len(await bot.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto"))
    await bot.deliver_alerts()
    assert (await bot.binding(chat_id)).active is False
    task = await task_of(bot, answer["task_id"])
    assert any(e["type"] == "task.channel_result" and e["detail"]["result"] == "blocked" for e in task["events"])
    assert len(await bot.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto")) >= max(1, calls_before)


# ---- /report -------------------------------------------------------------------------------------------

async def report_a_clue(bot, chat_id: int) -> str:  # noqa: ANN001
    """The /report dialogue as a citizen goes through it; returns the reference the bot gave."""
    await bot.sandbox.say(chat_id, "/report")
    kinds = await eventually(lambda: _with_inline(bot, chat_id))
    await bot.sandbox.press(chat_id, kinds["message_id"], "rk:url")
    await eventually(lambda: _last_contains(bot, chat_id, "网址"))
    await bot.sandbox.say(chat_id, "http://fake-bank.example/login")
    await eventually(lambda: _last_contains(bot, chat_id, "说明"))
    await bot.sandbox.say(chat_id, "收到短信说账户冻结")
    done = await eventually(lambda: _last_contains(bot, chat_id, "XS"))
    return "XS" + done.split("XS", 1)[1][:15]


async def test_report_dialogue_files_a_clue_with_a_reference(bot) -> None:
    """/report asks kind, value and a note, answers with a reference, and supervisors see the clue."""
    chat_id = await bot.bind()
    ref = await report_a_clue(bot, chat_id)
    await bot.dispatcher.run_dispatcher_jobs()
    clues = (await bot.dispatcher.client.get("/v1/clues", headers=await bot.dispatcher.headers("supervisor", ""))
             ).json()["items"]
    assert [(c["ref"], c["kind"], c["value"]) for c in clues] == [(ref, "url", "http://fake-bank.example/login")]


async def test_the_answer_to_a_clue_reaches_the_citizens_chat(bot) -> None:
    """限时反馈: a supervisor's answer is sent to the reporter's chat, with the reference and the 96110 footer."""
    chat_id = await bot.bind()
    ref = await report_a_clue(bot, chat_id)
    await bot.dispatcher.run_dispatcher_jobs()
    headers = await bot.dispatcher.headers("supervisor", "")
    clue = (await bot.dispatcher.client.get("/v1/clues", headers=headers)).json()["items"][0]
    resp = await bot.dispatcher.client.post(f"/v1/clues/{clue['clue_id']}/steps", headers=headers,
                                            json={"step": "answer", "answer": "该网址已被封堵，谢谢您的举报。"})
    assert resp.status_code == 200
    assert await bot.deliver_alerts() == 1
    answer = await last_bot_text(bot, chat_id)
    assert ref in answer and "该网址已被封堵" in answer and "96110" in answer
    assert await bot.deliver_alerts() == 0  # sent once


async def _with_inline(bot, chat_id: int) -> dict | None:  # noqa: ANN001
    for m in reversed(await bot.sandbox.messages(chat_id)):
        if (m.get("reply_markup") or {}).get("inline_keyboard"):
            return m
    return None


async def _last_contains(bot, chat_id: int, needle: str) -> str | None:  # noqa: ANN001
    last = await last_bot_text(bot, chat_id)
    return last if needle in last else None


# ---- webhook -------------------------------------------------------------------------------------------

@pytest.mark.bot_settings(SHOUHU_BOT_POLLING=False)
async def test_webhook_requires_the_secret(bot) -> None:
    """POST /telegram/webhook without the registered secret is 401 (here no webhook is configured at all)."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.app), base_url="http://bot") as client:
        resp = await client.post("/telegram/webhook", json={"update_id": 1},
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
    assert resp.status_code == 401


def test_callback_data_fits_telegrams_limit() -> None:
    """Button data stays under Telegram's 64-byte limit."""
    import uuid

    assert len(callback_data("callback_requested", uuid.uuid4()).encode()) <= 64


async def test_webhook_with_the_right_secret_is_handled_and_a_wrong_one_refused(sandbox, dispatcher) -> None:
    """Webhook mode: the bot registers its secret at start; updates with it are handled, others get 401."""
    import httpx

    from services.bot.app import create_app as create_bot
    from services.bot.settings import BotSettings

    settings = BotSettings(DATABASE_URL=dispatcher.db_url, TELEGRAM_API_BASE=sandbox.base, SHOUHU_BOT_WORKER=False,
                           TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook",
                           TELEGRAM_WEBHOOK_SECRET="s3cret-token_value")
    app = create_bot(settings, clock=dispatcher.clock)
    async with app.router.lifespan_context(app):
        async def registered() -> bool:
            return (await app.state.bot.get_webhook_info()).url == settings.telegram_webhook_url

        await eventually(registered)
        chat_id = await sandbox.citizen()
        update = {"update_id": 424242, "message": {
            "message_id": 1, "date": 1700000000, "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "测试"}, "text": "/help",
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}]}}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as client:
            wrong = await client.post("/telegram/webhook", json=update,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            missing = await client.post("/telegram/webhook", json=update)
            right = await client.post("/telegram/webhook", json=update,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_value"})
        assert (wrong.status_code, missing.status_code, right.status_code) == (401, 401, 200)
        replies = await eventually(lambda: sandbox.messages(chat_id))
        assert "96110" in replies[-1]["text"] and len(replies) == 1


async def test_a_bot_starting_during_a_429_storm_starts_and_registers_its_webhook_when_it_ends(sandbox,
                                                                                               dispatcher) -> None:
    """A replica restarted while Telegram answers 429 still starts (it does not crash on setWebhook) and
    registers its webhook once the storm is over, having waited out retry_after."""
    from aiogram.exceptions import TelegramRetryAfter

    from services.bot.app import create_app as create_bot
    from services.bot.settings import BotSettings

    settings = BotSettings(DATABASE_URL=dispatcher.db_url, TELEGRAM_API_BASE=sandbox.base, SHOUHU_BOT_WORKER=False,
                           TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook",
                           TELEGRAM_WEBHOOK_SECRET="s3cret-token_value")
    await sandbox.call("POST", "/faults", storm_s=1.5, retry_after_s=1)
    app = create_bot(settings, clock=dispatcher.clock)
    async with app.router.lifespan_context(app):  # started although every method answers 429
        async def stormed() -> int:
            return (await sandbox.call("GET", "/faults"))["storm_429"]

        await eventually(stormed)  # its setWebhook met the storm

        async def registered() -> bool:
            try:
                return (await app.state.bot.get_webhook_info()).url == settings.telegram_webhook_url
            except TelegramRetryAfter:  # our own question meets the storm too
                return False

        await eventually(registered, timeout_s=10)
