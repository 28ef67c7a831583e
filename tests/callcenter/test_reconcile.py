"""Calls keep their outcome: reconciliation with Twilio closes attempts whose callbacks never came, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from services.callcenter.calls.reconcile import Reconciler
from services.dispatcher.tasks.plans import RESULT_KIND
from tests.callcenter.test_calls import PHONE, warn
from tests.callcenter.test_stops import results

DEAD_URL = "http://127.0.0.1:9"  # nothing listens there: every callback Twilio sends to it fails


async def attempt_row(callcenter, task_id: str) -> Any:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(
            text("SELECT id, status, call_sid, outcome, error FROM call_attempts WHERE task_id = :t"
                 " AND channel = 'auto_call' ORDER BY id"), {"t": task_id})).one()


async def result_jobs(callcenter, task_id: str) -> list[str]:  # noqa: ANN001
    """The results the callcenter queued for the dispatcher (before the dispatcher consumes them)."""
    return [j["payload"]["result"] for j in await callcenter.dispatcher.jobs(task_id=task_id, kind=RESULT_KIND)]


async def unheard_busy_call(callcenter) -> dict:  # noqa: ANN001
    """A call that ends busy while every status callback fails (the callcenter unreachable for them)."""
    await callcenter.phone.script(PHONE, "busy")
    callcenter.app.state.placer.public_url = DEAD_URL
    answer = await warn(callcenter)
    assert await callcenter.place_calls() == 1
    call = await callcenter.phone.ended(PHONE)
    assert call["status"] == "busy"
    assert any(e["type"] == "status_callback" and e.get("error") for e in call["events"])
    row = await attempt_row(callcenter, answer["task_id"])
    assert row.status not in ("busy", "completed") and row.outcome is None  # nobody told us
    return answer


async def send_callback(callcenter, attempt_id: int, form: dict[str, str]) -> httpx.Response:  # noqa: ANN001
    """A status callback as Twilio sends it (signed over the callcenter's public URL)."""
    url = f"{callcenter.base_url}/twilio/status?attempt={attempt_id}"
    signature = RequestValidator(callcenter.app.state.settings.auth_token()).compute_signature(url, form)
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=form, headers={"X-Twilio-Signature": signature})


async def test_reconciliation_closes_a_call_whose_callbacks_never_came_once(callcenter) -> None:
    """Every callback lost: reconciliation asks Twilio, reports "busy" once; another sweep and a late callback add
    nothing, and the dispatcher sees one result."""
    answer = await unheard_busy_call(callcenter)
    reconciler: Reconciler = callcenter.app.state.reconciler
    counts = await reconciler.sweep(everything=True)
    assert counts["busy"] == 1
    row = await attempt_row(callcenter, answer["task_id"])
    assert (row.status, row.outcome) == ("busy", "busy")
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]

    assert (await reconciler.sweep(everything=True))["busy"] == 0
    late = await send_callback(callcenter, row.id, {"CallSid": row.call_sid, "CallStatus": "busy",
                                                    "CallDuration": "0"})
    assert late.status_code == 204
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]
    assert await results(callcenter, answer["task_id"]) == ["busy"]


async def test_a_duplicate_or_out_of_order_callback_after_the_end_reports_nothing_more(callcenter) -> None:
    """The final callback came; the same callback again, a late "ringing", and a reconciliation add no result and
    do not move the attempt back."""
    await callcenter.phone.script(PHONE, "busy")
    answer = await warn(callcenter)
    await callcenter.place_calls()
    await callcenter.phone.ended(PHONE)
    row = await attempt_row(callcenter, answer["task_id"])
    assert row.status == "busy" and await result_jobs(callcenter, answer["task_id"]) == ["busy"]
    for form in ({"CallSid": row.call_sid, "CallStatus": "busy"}, {"CallSid": row.call_sid, "CallStatus": "ringing"}):
        assert (await send_callback(callcenter, row.id, form)).status_code == 204
    assert (await callcenter.app.state.reconciler.sweep(everything=True))["busy"] == 0
    assert (await attempt_row(callcenter, answer["task_id"])).status == "busy"
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]


async def test_several_reconcilers_at_once_report_one_result(callcenter) -> None:
    """Three replicas sweep the same lost call at the same moment: the row lock and the final-state check let one
    report it."""
    answer = await unheard_busy_call(callcenter)
    state = callcenter.app.state
    reconcilers = [Reconciler(state.twilio, state.sessionmaker, clock=callcenter.dispatcher.clock, interval_s=30,
                              overdue_s=210, in_flight_s=105) for _ in range(3)]
    sweeps = []
    for _ in range(3):
        sweeps += await asyncio.gather(*(r.sweep(everything=True) for r in reconcilers))
    assert sum(s["busy"] for s in sweeps) == 1
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]


async def test_the_periodic_sweep_waits_for_the_calls_expected_duration(callcenter) -> None:
    """A periodic (not gap) sweep leaves an attempt alone until ring timeout + longest script + margin passed."""
    answer = await unheard_busy_call(callcenter)
    reconciler: Reconciler = callcenter.app.state.reconciler
    assert (await reconciler.sweep())["busy"] == 0
    assert await result_jobs(callcenter, answer["task_id"]) == []
    callcenter.dispatcher.clock.advance(seconds=callcenter.app.state.settings.expected_call_s() + 1)
    assert (await reconciler.sweep())["busy"] == 1
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]


async def test_the_running_reconciler_sweeps_on_start_and_after_a_gap(callcenter) -> None:
    """Started, the reconciler sweeps everything at once; a noted gap (a webhook refused) makes it sweep again."""
    answer = await unheard_busy_call(callcenter)
    state = callcenter.app.state
    reconciler = Reconciler(state.twilio, state.sessionmaker, clock=callcenter.dispatcher.clock, interval_s=3600,
                            overdue_s=210, in_flight_s=105)
    running = asyncio.create_task(reconciler.run())
    try:
        for _ in range(100):
            if await result_jobs(callcenter, answer["task_id"]):
                break
            await asyncio.sleep(0.05)
        assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]
        before = reconciler.sweeps
        reconciler.note_gap()
        for _ in range(100):
            if reconciler.sweeps > before:
                break
            await asyncio.sleep(0.05)
        assert reconciler.sweeps > before
    finally:
        reconciler.stop()
        await asyncio.wait_for(running, 5)
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]


def die_inside_the_request(placer, *, after_twilio_took_it: bool) -> None:  # noqa: ANN001
    """The process 'dies' inside the create request: with the call placed at Twilio, or before it left."""
    real = placer._create_call

    async def dying(to: str, attempt_id: int) -> Any:
        if after_twilio_took_it:
            await real(to, attempt_id)
        raise ConnectionResetError("the process stopped inside the Twilio request")

    placer._create_call = dying


async def test_a_rerun_adopts_the_call_twilio_placed_and_reports_its_outcome(callcenter) -> None:
    """The first run died after Twilio placed the call (no sid stored, no callback heard): the rerun finds the call
    by To/From, adopts its sid and reports its outcome once; no second call rings."""
    await callcenter.phone.script(PHONE, "busy")
    placer = callcenter.app.state.placer
    placer.public_url = DEAD_URL
    die_inside_the_request(placer, after_twilio_took_it=True)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    call = await callcenter.phone.ended(PHONE)
    row = await attempt_row(callcenter, answer["task_id"])
    assert (row.status, row.call_sid) == ("dialing", None)
    del placer._create_call

    await callcenter.place_calls()  # too soon: the first request could still be in flight
    assert (await attempt_row(callcenter, answer["task_id"])).call_sid is None
    callcenter.dispatcher.clock.advance(minutes=10)
    await callcenter.place_calls()
    row = await attempt_row(callcenter, answer["task_id"])
    assert (row.call_sid, row.status, row.outcome) == (call["sid"], "busy", "busy")
    assert len(await callcenter.phone.calls(PHONE)) == 1
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]
    assert (await callcenter.app.state.reconciler.sweep(everything=True))["busy"] == 0
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]


async def test_a_rerun_dials_when_twilio_has_no_call_and_never_blind(callcenter) -> None:
    """The first run died before Twilio took the call: while Twilio cannot be asked nothing is dialled; once it
    says it has no such call, the rerun dials for the same attempt, and the citizen is called once."""
    await callcenter.phone.script(PHONE, "answer", ["1"])
    placer = callcenter.app.state.placer
    die_inside_the_request(placer, after_twilio_took_it=False)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    assert (await attempt_row(callcenter, answer["task_id"])).status == "dialing"
    del placer._create_call

    api_base = placer.client.api.base_url
    placer.client.api.base_url = DEAD_URL  # Twilio unreachable: the call list cannot be had
    callcenter.dispatcher.clock.advance(minutes=10)
    await callcenter.place_calls()
    assert (await attempt_row(callcenter, answer["task_id"])).status == "dialing"
    assert await callcenter.phone.calls(PHONE) == []

    placer.client.api.base_url = api_base
    callcenter.dispatcher.clock.advance(minutes=10)
    await callcenter.place_calls()
    call = await callcenter.phone.ended(PHONE)
    assert call["status"] == "completed" and len(await callcenter.phone.calls(PHONE)) == 1
    row = await attempt_row(callcenter, answer["task_id"])
    assert row.call_sid == call["sid"] and row.outcome == "acknowledged"
    assert await results(callcenter, answer["task_id"]) == ["answered"]


async def test_an_attempt_its_job_left_unresolved_is_closed_as_failed_once_and_never_dialled(callcenter) -> None:
    """The first run died before Twilio took the call and its job did not come back in time: reconciliation finds
    no call at Twilio and reports "failed" once; the job's late rerun then places no call."""
    await callcenter.phone.script(PHONE, "answer", ["1"])
    placer = callcenter.app.state.placer
    die_inside_the_request(placer, after_twilio_took_it=False)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    del placer._create_call
    reconciler: Reconciler = callcenter.app.state.reconciler
    assert (await reconciler.sweep(everything=True))["failed"] == 0  # its job may still resolve it
    settings = callcenter.app.state.settings
    callcenter.dispatcher.clock.advance(seconds=settings.dial_in_flight_s() + settings.expected_call_s() + 1)
    assert (await reconciler.sweep())["failed"] == 1
    row = await attempt_row(callcenter, answer["task_id"])
    assert (row.status, row.outcome, row.call_sid) == ("failed", "failed", None)
    await callcenter.place_calls()  # the job's late rerun
    assert await callcenter.phone.calls(PHONE) == []
    assert await result_jobs(callcenter, answer["task_id"]) == ["failed"]


async def test_a_sweep_pages_through_every_unfinished_attempt(callcenter) -> None:
    """More lost calls than one page: the sweep goes on page by page until each is closed."""
    callcenter.app.state.placer.public_url = DEAD_URL
    phones = ["+8613800138001", "+8613800138002", "+8613800138003"]
    tasks = []
    for phone in phones:
        await callcenter.phone.script(phone, "busy")
        tasks.append((await warn(callcenter, phone=phone))["task_id"])
    assert await callcenter.place_calls() == 3
    for phone in phones:
        await callcenter.phone.ended(phone)
    state = callcenter.app.state
    reconciler = Reconciler(state.twilio, state.sessionmaker, clock=callcenter.dispatcher.clock, interval_s=30,
                            overdue_s=210, in_flight_s=105, batch=2)
    assert (await reconciler.sweep(everything=True))["busy"] == 3
    for task_id in tasks:
        assert await result_jobs(callcenter, task_id) == ["busy"]


async def test_the_calls_own_callbacks_adopt_its_sid_when_the_placer_never_stored_it(callcenter) -> None:
    """The first run died after Twilio took the call but its callbacks still reach us: they store the sid and the
    outcome, and the job's rerun places no second call and reports nothing more."""
    await callcenter.phone.script(PHONE, "busy")
    placer = callcenter.app.state.placer
    die_inside_the_request(placer, after_twilio_took_it=True)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    call = await callcenter.phone.ended(PHONE)
    del placer._create_call
    row = await attempt_row(callcenter, answer["task_id"])
    assert (row.call_sid, row.status, row.outcome) == (call["sid"], "busy", "busy")
    callcenter.dispatcher.clock.advance(minutes=10)
    await callcenter.place_calls()
    assert len(await callcenter.phone.calls(PHONE)) == 1
    assert await result_jobs(callcenter, answer["task_id"]) == ["busy"]
