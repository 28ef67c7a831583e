"""An acknowledgement stops all contact: robocalls ringing or in progress are cancelled through Twilio's REST API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import text

from services.dispatcher.tasks.plans import RESULT_KIND
from shared.queue import service as q
from shared.queue.service import ClaimedJob, NewJob
from tests.callcenter.test_calls import PHONE, task_after, warn
from tests.conftest import eventually


async def ringing_call(callcenter, phone: str = PHONE, **warning: Any) -> tuple[dict, dict]:  # noqa: ANN001
    """A robocall ringing at the citizen's phone, which nobody answers (phone time at 1/5)."""
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{phone}", behaviour="manual")
    answer = await warn(callcenter, phone=phone, **warning)
    assert await callcenter.place_calls() == 1
    sid = (await callcenter.phone.calls(phone))[-1]["sid"]
    call = await callcenter.phone.call("GET", f"/calls/{sid}?status=ringing&wait=5")
    assert call["status"] == "ringing"
    return answer, call


async def acknowledge(callcenter, task_id: str, outcome: str = "acknowledged") -> None:  # noqa: ANN001
    d = callcenter.dispatcher
    resp = await d.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": outcome},
                               headers=await d.headers("supervisor", "33"))
    assert resp.status_code == 200, resp.text


def updates(call: dict) -> list[dict]:
    """The REST update requests the sandbox received for a call (Status=canceled|completed, redirects)."""
    return [e for e in call["events"] if e["type"] == "api_update"]


async def attempts(callcenter, task_id: str) -> list[Any]:  # noqa: ANN001
    async with callcenter.app.state.sessionmaker() as session:
        return (await session.execute(
            text("SELECT attempt, channel, status, outcome, stop_requested_at FROM call_attempts WHERE task_id = :t"
                 " ORDER BY id"), {"t": task_id})).all()


async def results(callcenter, task_id: str) -> list[str]:  # noqa: ANN001
    task = await task_after(callcenter, task_id)
    return [e["detail"]["result"] for e in task["events"]
            if e["type"] in ("task.channel_result", "task.late_result")]


async def test_an_acknowledgement_cancels_a_ringing_robocall_and_no_retry_follows(callcenter) -> None:
    """Acknowledged on another channel while the robocall rings: Status=canceled reaches Twilio, reported once as
    "stopped", and no retry call is queued or placed."""
    answer, call = await ringing_call(callcenter)
    await acknowledge(callcenter, answer["task_id"])
    (stop,) = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.stop")
    assert await callcenter.stop_calls() == 1
    ended = await callcenter.phone.call("GET", f"/calls/{call['sid']}?status=final&wait=5")
    assert ended["status"] == "canceled" and ended["ended_by"] == "api"
    assert [(u["status"], u["call_status"]) for u in updates(ended)] == [("canceled", "ringing")]
    # A rerun of the same order does nothing twice: no second request, no second result.
    rerun = ClaimedJob(id=0, queue="callcenter", kind="call.stop", payload=stop["payload"], attempts=2,
                       max_attempts=10, task_id=stop["task_id"], run_at=stop["run_at"], created_at=stop["created_at"])
    await callcenter.app.state.stopper.stop(rerun)
    again = await callcenter.phone.call("GET", f"/calls/{call['sid']}")
    assert len(updates(again)) == 1
    assert [r.outcome for r in await attempts(callcenter, answer["task_id"])] == ["stopped"]
    assert await results(callcenter, answer["task_id"]) == ["stopped"]
    assert await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto", status="queued") == []
    assert await callcenter.place_calls() == 0
    assert len(await callcenter.phone.calls(PHONE)) == 1


async def test_an_acknowledgement_ends_a_robocall_in_progress(callcenter) -> None:
    """A robocall the citizen is listening to (no key yet) is ended with Status=completed and reported "stopped",
    not "answered"."""
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{PHONE}", behaviour="answer", digits=[""], ring_s=0.1)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    sid = (await callcenter.phone.calls(PHONE))[-1]["sid"]
    live = await callcenter.phone.call("GET", f"/calls/{sid}?status=in-progress&wait=5")
    assert live["status"] == "in-progress"
    await eventually(lambda: _status_is(callcenter, answer["task_id"], "in-progress"))
    await acknowledge(callcenter, answer["task_id"])
    await callcenter.stop_calls()
    ended = await callcenter.phone.call("GET", f"/calls/{sid}?status=final&wait=5")
    assert ended["status"] == "completed" and ended["ended_by"] == "api"
    assert [u["status"] for u in updates(ended)] == ["completed"]
    assert await results(callcenter, answer["task_id"]) == ["stopped"]
    assert await callcenter.place_calls() == 0


async def _status_is(callcenter, task_id: str, status: str) -> bool:  # noqa: ANN001
    return [a.status for a in await attempts(callcenter, task_id)] == [status]


class GatedPacer:
    """A pacer that holds every call at the Twilio request until let go: the stop order arrives in between."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting.set()
        await self.go.wait()
        yield


async def test_a_stop_that_arrives_while_the_call_is_being_placed_still_cancels_it(callcenter) -> None:
    """The attempt is reserved (no call sid yet) when the stop runs: the placer cancels the call as soon as Twilio
    names it, and it is reported "stopped" once."""
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{PHONE}", behaviour="manual")
    gate = GatedPacer()
    callcenter.app.state.placer.pacer = gate
    answer = await warn(callcenter)
    placing = asyncio.create_task(callcenter.place_calls())
    await asyncio.wait_for(gate.waiting.wait(), 5)
    assert [a.status for a in await attempts(callcenter, answer["task_id"])] == ["dialing"]
    await acknowledge(callcenter, answer["task_id"])
    assert await callcenter.stop_calls() == 1  # nothing to ask Twilio yet: the attempt is marked
    (marked,) = await attempts(callcenter, answer["task_id"])
    assert marked.stop_requested_at is not None and marked.outcome is None
    gate.go.set()
    assert await asyncio.wait_for(placing, 10) == 1
    (call,) = await callcenter.phone.calls(PHONE)
    ended = await callcenter.phone.call("GET", f"/calls/{call['sid']}?status=final&wait=5")
    assert ended["status"] == "canceled" and [u["status"] for u in updates(ended)] == ["canceled"]
    assert await results(callcenter, answer["task_id"]) == ["stopped"]


async def test_call_me_back_on_telegram_while_the_robocall_job_runs_places_no_call(callcenter) -> None:
    """'Call me back' pressed on Telegram as the call job starts: the job, already taken, places no call."""
    answer = await warn(callcenter)
    d = callcenter.dispatcher
    async with d.sessionmaker() as session, session.begin():  # the callcenter's worker has taken the job
        (job,) = await q.claim(session, queue="callcenter", worker="test", now=d.clock.now(), lease_s=60,
                               kinds=["call.auto"])
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": answer["task_id"], "channel": "bot_alert", "attempt": 1,
                                                  "result": "pressed", "feedback": "callback_requested"})])
    await d.run_dispatcher_jobs()
    await callcenter.stop_calls()
    await callcenter.app.state.placer.place(job)
    assert await callcenter.phone.calls(PHONE) == []
    (skipped,) = await attempts(callcenter, answer["task_id"])
    assert (skipped.status, skipped.outcome) == ("skipped", "stopped")
    assert "stopped" in await results(callcenter, answer["task_id"])
    assert await d.jobs(task_id=answer["task_id"], kind="call.operator", status="queued")


async def test_the_call_the_citizen_answers_on_is_left_alone(callcenter) -> None:
    """The stop that follows a key on a call (except_attempt) does not cut that call: it is saying "recorded"."""
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{PHONE}", behaviour="answer", digits=[""], ring_s=0.1)
    answer = await warn(callcenter)
    await callcenter.place_calls()
    sid = (await callcenter.phone.calls(PHONE))[-1]["sid"]
    await callcenter.phone.call("GET", f"/calls/{sid}?status=in-progress&wait=5")
    d = callcenter.dispatcher
    async with d.sessionmaker() as session, session.begin():  # the citizen's key 1 on this very call
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": answer["task_id"], "channel": "auto_call", "attempt": 1,
                                                  "result": "answered", "feedback": "acknowledged"})])
    await d.run_dispatcher_jobs()
    (stop,) = await d.jobs(task_id=answer["task_id"], kind="call.stop")
    assert stop["payload"]["except_attempt"] == 1
    await callcenter.stop_calls()
    call = await callcenter.phone.call("GET", f"/calls/{sid}")
    assert updates(call) == [] and call["status"] == "in-progress"
    assert [a.stop_requested_at for a in await attempts(callcenter, answer["task_id"])] == [None]


async def test_a_seat_operators_call_is_never_cut(callcenter) -> None:
    """A task closed while its seat operator's call rings: the stop leaves the operator's call alone."""
    from tests.callcenter.test_seats import operator_task, seat

    citizen, desk = "+8613900000021", "+8657187000021"
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{desk}", behaviour="manual")
    task_id = await operator_task(callcenter, phone=citizen)
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=10) as api:
        headers = await seat(callcenter, api, phone=desk)
        assert (await api.post("/v1/queue/next", headers=headers)).status_code == 200
        assert (await api.post(f"/v1/tasks/{task_id}/call", headers=headers)).status_code == 200
    (leg,) = await callcenter.phone.calls(desk)
    await callcenter.phone.call("GET", f"/calls/{leg['sid']}?status=ringing&wait=5")
    await acknowledge(callcenter, task_id, outcome="dissuaded")
    assert await callcenter.stop_calls() == 1
    call = await callcenter.phone.call("GET", f"/calls/{leg['sid']}")
    assert updates(call) == [] and call["status"] == "ringing"
    await callcenter.phone.call("POST", f"/calls/{leg['sid']}/hangup")


async def test_a_cancel_that_failed_is_finished_by_the_call_jobs_retry(callcenter) -> None:
    """The placer marked its call to stop but could not reach Twilio: the job's retry cancels it, even once the
    task has closed, and reports it once."""
    await callcenter.phone.call("POST", "/settings", time_scale=0.2)
    await callcenter.phone.call("PUT", f"/numbers/{PHONE}", behaviour="manual")
    answer = await warn(callcenter)
    (job,) = await callcenter.dispatcher.jobs(task_id=answer["task_id"], kind="call.auto")
    assert await callcenter.place_calls() == 1
    (call,) = await callcenter.phone.calls(PHONE)
    await callcenter.phone.call("GET", f"/calls/{call['sid']}?status=ringing&wait=5")
    async with callcenter.app.state.sessionmaker() as session, session.begin():  # as left by the failed cancel
        await session.execute(text("UPDATE call_attempts SET stop_requested_at = now() WHERE task_id = :t"),
                              {"t": answer["task_id"]})
    await acknowledge(callcenter, answer["task_id"])
    retry = ClaimedJob(id=job["id"], queue="callcenter", kind="call.auto", payload=job["payload"], attempts=2,
                       max_attempts=10, task_id=job["task_id"], run_at=job["run_at"], created_at=job["created_at"])
    await callcenter.app.state.placer.place(retry)
    ended = await callcenter.phone.call("GET", f"/calls/{call['sid']}?status=final&wait=5")
    assert ended["status"] == "canceled" and [u["status"] for u in updates(ended)] == ["canceled"]
    await callcenter.stop_calls()  # the dispatcher's own order, afterwards, finds nothing left to do
    assert len(updates(await callcenter.phone.call("GET", f"/calls/{call['sid']}"))) == 1
    assert await results(callcenter, answer["task_id"]) == ["stopped"]
