"""Automated 96110 calls end to end: the real twilio client, the Twilio sandbox, signed webhooks, the dispatcher."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from tests.conftest import warning

PHONE = "+8613800138000"


async def warn(callcenter, signal: str = "fraud_call_received", phone: str = PHONE, **fields) -> dict:  # noqa: ANN001
    resp = await callcenter.dispatcher.client.post("/v1/warnings", json=warning(phone=phone, signal=signal, **fields),
                                                   headers=await callcenter.dispatcher.headers())
    assert resp.status_code == 201, resp.text
    return resp.json()


async def task_after(callcenter, task_id: str) -> dict:  # noqa: ANN001
    await callcenter.dispatcher.run_dispatcher_jobs()
    resp = await callcenter.dispatcher.client.get(f"/v1/tasks/{task_id}",
                                                  headers=await callcenter.dispatcher.headers("supervisor", ""))
    return resp.json()


def said(call: dict) -> str:
    return " ".join(e.get("text", "") for e in call["events"] if e["type"] == "say")


async def test_pressing_1_closes_the_task_and_the_caller_hears_it(callcenter) -> None:
    """Key 1: acknowledged, the task closes, and the caller is told what was recorded."""
    await callcenter.phone.script(PHONE, "answer", ["1"])
    answer = await warn(callcenter)
    assert await callcenter.place_calls() == 1
    call = await callcenter.phone.ended(PHONE)
    assert call["status"] == "completed"
    assert "冒充" in said(call) or "诈骗" in said(call)
    assert "已记录" in said(call)
    task = await task_after(callcenter, answer["task_id"])
    assert task["status"] == "closed" and task["outcome"] == "acknowledged"


async def test_pressing_2_queues_an_operator_at_once(callcenter) -> None:
    """Key 2: the task goes to an operator's queue now."""
    await callcenter.phone.script(PHONE, "answer", ["2"])
    answer = await warn(callcenter)
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    task = await task_after(callcenter, answer["task_id"])
    assert "task.callback_requested" in [e["type"] for e in task["events"]]
    assert await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")


async def test_pressing_3_is_an_emergency(callcenter) -> None:
    """Key 3 (money already sent): high tier, an operator at once, a payment-stop request."""
    await callcenter.phone.script(PHONE, "answer", ["3"])
    answer = await warn(callcenter)
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    task = await task_after(callcenter, answer["task_id"])
    assert task["tier"] == "high" and task["emergency_at"]
    assert "payment_stop.requested" in [e["type"] for e in task["events"]]


async def test_a_wrong_key_is_explained_and_asked_again(callcenter) -> None:
    """Any other key says so and asks again; a 1 afterwards is recorded."""
    await callcenter.phone.script(PHONE, "answer", ["7", "1"])
    answer = await warn(callcenter)
    await callcenter.place_calls()
    call = await callcenter.phone.ended(PHONE)
    assert "按键无效" in said(call)
    task = await task_after(callcenter, answer["task_id"])
    assert task["outcome"] == "acknowledged"


async def test_silence_repeats_once_then_hangs_up(callcenter) -> None:
    """No key: the question is asked once more, then goodbye; the citizen counts as reached, the task stays open."""
    await callcenter.phone.script(PHONE, "answer", ["", ""])
    answer = await warn(callcenter)
    await callcenter.place_calls()
    call = await callcenter.phone.ended(PHONE)
    assert said(call).count("请按1") == 2 and "再见" in said(call)
    task = await task_after(callcenter, answer["task_id"])
    assert task["status"] == "in_progress" and task["reached_at"]


@pytest.mark.parametrize(("behaviour", "result", "retry_min"), [
    ("busy", "busy", 10), ("no-answer", "no_answer", 30), ("machine", "machine", 30), ("failed", "failed", 30)])
async def test_unanswered_outcomes_reach_the_dispatcher_and_drive_retries(callcenter, behaviour: str, result: str,
                                                                          retry_min: int) -> None:
    """Busy retries sooner (10 min) than no answer, a machine or a failure (30 min), per the medium playbook."""
    await callcenter.phone.script(PHONE, behaviour)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    task = await task_after(callcenter, answer["task_id"])
    results = [e["detail"]["result"] for e in task["events"] if e["type"] == "task.channel_result"]
    assert results == [result]
    calls = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto", status="queued")
    assert [c["payload"]["attempt"] for c in calls] == [2]
    assert calls[0]["run_at"] - callcenter.dispatcher.clock.now() == timedelta(minutes=retry_min)


async def test_a_job_that_runs_twice_rings_once(callcenter) -> None:
    """The same attempt placed twice (a redelivered job) makes one call."""
    await callcenter.phone.script(PHONE, "answer", ["1"])
    answer = await warn(callcenter)
    job = (await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto"))[0]
    from shared.queue.service import ClaimedJob

    claimed = ClaimedJob(id=job["id"], queue="callcenter", kind="call.auto", payload=job["payload"], attempts=1,
                         max_attempts=10, task_id=job["task_id"], run_at=job["run_at"], created_at=job["created_at"])
    await callcenter.app.state.placer.place(claimed)
    await callcenter.app.state.placer.place(claimed)
    await callcenter.phone.ended(PHONE)
    assert len(await callcenter.phone.calls(PHONE)) == 1


async def test_forged_and_missing_signatures_are_refused_and_change_nothing(callcenter) -> None:
    """Twilio webhooks without a valid X-Twilio-Signature get 403 and record nothing."""
    await callcenter.phone.script(PHONE, "answer", ["1"])
    answer = await warn(callcenter)
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    async with callcenter.app.state.sessionmaker() as session:
        attempt_id = (await session.execute(text("SELECT id FROM call_attempts"))).scalar_one()
    url = f"{callcenter.base_url}/twilio/gather?attempt={attempt_id}&round=1"
    form = {"CallSid": "CA" + "0" * 32, "Digits": "3"}
    forged = RequestValidator("not-the-token").compute_signature(url, form)
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, data=form)
        wrong = await client.post(url, data=form, headers={"X-Twilio-Signature": forged})
    assert (missing.status_code, wrong.status_code) == (403, 403)
    task = await task_after(callcenter, answer["task_id"])
    assert task["outcome"] == "acknowledged" and not task["emergency_at"]


async def test_medium_calls_wait_for_the_call_window_and_high_calls_do_not(callcenter) -> None:
    """At 23:00 local time a medium-tier call is held until the window opens; a high-tier one goes at once."""
    callcenter.dispatcher.clock.set(callcenter.dispatcher.clock.now().replace(hour=15))  # 23:00 in Beijing
    await callcenter.phone.script(PHONE, "answer", ["1"])
    await callcenter.phone.script("+8613900000001", "answer", ["1"])
    medium = await warn(callcenter)
    high = await warn(callcenter, signal="transfer_in_progress", phone="+8613900000001")
    # The dispatcher already scheduled the medium call for 08:00; run it early anyway: the callcenter refuses.
    async with callcenter.app.state.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE jobs SET run_at = :now WHERE kind = 'call.auto'"),
                              {"now": callcenter.dispatcher.clock.now()})
    await callcenter.place_calls()
    await callcenter.phone.ended("+8613900000001")
    assert await callcenter.phone.calls(PHONE) == []
    held = await callcenter.dispatcher.jobs(task_id=medium["task_id"], kind="call.auto")
    assert held[0]["status"] == "queued" and held[0]["run_at"].astimezone().hour is not None
    assert held[0]["run_at"] > callcenter.dispatcher.clock.now() + timedelta(hours=8)
    assert high["tier"] == "high"


async def test_calls_are_paced_per_caller_id(callcenter) -> None:
    """With a pace of 2 calls/s, no second sees more than 2 new calls."""
    callcenter.app.state.placer.pacer.interval_s = 0.51  # 2 calls/s with the margin
    phones = [f"+86139000000{i:02d}" for i in range(5)]
    for p in phones:
        await callcenter.phone.script(p, "answer", ["1"])
        await warn(callcenter, signal="transfer_in_progress", phone=p)
    await callcenter.place_calls()
    stats = await callcenter.phone.call("GET", "/stats")
    assert stats["created"] == 5 and stats["max_calls_in_any_second"] <= 2


async def test_do_not_call_numbers_are_never_dialled(callcenter) -> None:
    """A number on the do-not-call list gets no call; the dispatcher hears why."""
    async with callcenter.app.state.sessionmaker() as session, session.begin():
        await session.execute(text("INSERT INTO do_not_call (phone, reason, added_by, added_at)"
                                   " VALUES (:p, 'wrong number', 'test', now())"), {"p": PHONE})
    answer = await warn(callcenter)
    await callcenter.place_calls()
    assert await callcenter.phone.calls(PHONE) == []
    task = await task_after(callcenter, answer["task_id"])
    assert [e["detail"]["result"] for e in task["events"] if e["type"] == "task.channel_result"] == ["do_not_call"]


FOREIGN = "+447400123456"  # a UK mobile


async def test_a_foreign_number_is_stored_and_shown_but_goes_to_an_operator(callcenter) -> None:
    """By default (CALLCENTER_AUTODIAL_COUNTRIES=CN) a +44 number gets no robocall: a seat operator calls it."""
    answer = await warn(callcenter, phone="+44 7400 123456")
    assert await callcenter.place_calls() == 1
    assert await callcenter.phone.calls(FOREIGN) == []
    task = await task_after(callcenter, answer["task_id"])
    results = [e["detail"] for e in task["events"] if e["type"] == "task.channel_result"]
    assert [r["result"] for r in results] == ["operator_required"] and "GB" in results[0]["detail"]
    operator = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")
    assert len(operator) == 1 and operator[0]["payload"]["phone"] == FOREIGN  # stored in full, for the seat
    assert operator[0]["run_at"] <= callcenter.dispatcher.clock.now()  # at once, not at the playbook's +180 min


async def test_a_chinese_landline_is_still_dialled_automatically(callcenter) -> None:
    """The default allows every number of China, landlines included."""
    landline = "+8657187000099"
    await callcenter.phone.script(landline, "answer", ["1"])
    answer = await warn(callcenter, phone="0571-8700 0099")
    assert await callcenter.place_calls() == 1
    assert (await callcenter.phone.ended(landline))["status"] == "completed"
    assert (await task_after(callcenter, answer["task_id"]))["outcome"] == "acknowledged"


@pytest.mark.callcenter_settings(CALLCENTER_AUTODIAL_COUNTRIES="cn, GB")
async def test_a_foreign_number_is_dialled_when_its_country_is_allowed(callcenter) -> None:
    """With GB in CALLCENTER_AUTODIAL_COUNTRIES the +44 number gets the automated call."""
    await callcenter.phone.script(FOREIGN, "answer", ["1"])
    answer = await warn(callcenter, phone=FOREIGN)
    assert await callcenter.place_calls() == 1
    assert (await callcenter.phone.ended(FOREIGN))["status"] == "completed"
    task = await task_after(callcenter, answer["task_id"])
    assert task["status"] == "closed" and task["outcome"] == "acknowledged"


def test_autodial_countries_must_be_country_codes() -> None:
    """A typo in CALLCENTER_AUTODIAL_COUNTRIES stops the service at start, naming the bad entry."""
    from services.callcenter.settings import CallcenterSettings

    assert CallcenterSettings().autodial_regions() == frozenset({"CN"})
    assert CallcenterSettings(CALLCENTER_AUTODIAL_COUNTRIES=" cn,hk ,").autodial_regions() == frozenset({"CN", "HK"})
    with pytest.raises(ValueError, match="China is not a 2-letter country code"):
        CallcenterSettings(CALLCENTER_AUTODIAL_COUNTRIES="CN,China")


async def test_twilio_429_is_retried_and_the_call_still_placed(callcenter) -> None:
    """When Twilio refuses with 429 (code 20429), the call is retried with backoff and placed once."""
    await callcenter.phone.call("POST", "/limits", calls_per_s=1)
    phones = ["+8613900000011", "+8613900000012"]
    for p in phones:
        await callcenter.phone.script(p, "answer", ["1"])
        await warn(callcenter, signal="transfer_in_progress", phone=p)
    await callcenter.place_calls()
    for p in phones:
        assert len(await callcenter.phone.calls(p)) == 1
    stats = await callcenter.phone.call("GET", "/stats")
    assert stats["rejected_429"] >= 1 and stats["created"] == 2
