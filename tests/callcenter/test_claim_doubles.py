"""Two seats never hold the same task at once: one live operator call per task, and racing claims with held=release."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text

from services.dispatcher.tasks.plans import RESULT_KIND
from shared.auth.service import create_key
from shared.db import transaction
from shared.queue import service as q
from shared.queue.service import NewJob
from tests.callcenter.test_seats import operator_task, seat
from tests.conftest import warning

ROUNDS = 12  # claims per seat in the race (bounded: no timing, no sleeps)


@pytest.fixture
async def api(callcenter):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=callcenter.base_url, timeout=30) as client:
        yield client


async def citizen_asks_again(callcenter, task_id: str, feedback: str = "not_me") -> None:  # noqa: ANN001
    """The citizen answers on the bot again (another button) after the task's operator call was queued."""
    d = callcenter.dispatcher
    async with d.sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=d.clock.now(),
                                         payload={"task_id": task_id, "channel": "bot_alert", "attempt": 1,
                                                  "result": "pressed", "feedback": feedback})])
    await d.run_dispatcher_jobs()


async def live_operator_calls(callcenter, task_id: str) -> list[tuple[str, str | None]]:  # noqa: ANN001
    async with callcenter.dispatcher.sessionmaker() as session:
        rows = (await session.execute(
            text("SELECT status, locked_by FROM jobs WHERE kind = 'call.operator' AND task_id = :t"
                 " AND status IN ('queued', 'running') ORDER BY id"), {"t": task_id})).all()
    return [(r.status, r.locked_by) for r in rows]


async def test_a_citizen_asking_again_while_a_seat_holds_the_task_gives_no_second_seat_the_task(callcenter,
                                                                                                  api) -> None:
    """A second request for a person's call (not_me after call me) joins the held call; no other seat gets the task."""
    task_id = await operator_task(callcenter, phone="+8613900000101")
    a = await seat(callcenter, api, unit="3301")
    b = await seat(callcenter, api, unit="33")
    assert (await api.post("/v1/queue/next", headers=a)).json()["task_id"] == task_id
    await citizen_asks_again(callcenter, task_id)
    assert (await api.post("/v1/queue/next", headers=b)).status_code == 204
    assert [s for s, _ in await live_operator_calls(callcenter, task_id)] == ["running"]
    done = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded"}, headers=a)
    assert done.status_code == 202, done.text


async def test_a_citizen_asking_again_while_the_call_waits_queues_it_once(callcenter, api) -> None:
    """Asked for twice before any seat claims: one operator call waits, so one seat gets the task and the other 204."""
    task_id = await operator_task(callcenter, phone="+8613900000102")
    await citizen_asks_again(callcenter, task_id)
    a = await seat(callcenter, api, unit="3301")
    b = await seat(callcenter, api, unit="33")
    answers = [await api.post("/v1/queue/next", headers=h) for h in (a, b)]
    assert [r.status_code for r in answers] == [200, 204]
    assert [s for s, _ in await live_operator_calls(callcenter, task_id)] == ["running"]
    # The plan still shows the call waiting as the task's latest operator-call attempt (no attempt was skipped).
    task = (await callcenter.dispatcher.client.get(
        f"/v1/tasks/{task_id}", headers=await callcenter.dispatcher.headers("supervisor", ""))).json()
    assert task["attempts"]["operator_call"] == 1


@dataclass
class _Held:
    seat: str
    answered: int  # the race's event number when the claim's answer came
    disposed: bool = False


@pytest.mark.callcenter_settings(SHOUHU_SEAT_WRAP_UP_S=0)  # a seat claims again right after a disposition
async def test_seats_racing_with_held_release_never_hold_one_task_at_once(callcenter, api) -> None:
    """Seats of one unit claiming concurrently with held=release (and tasks asked for twice) never share a task."""
    d = callcenter.dispatcher
    tasks = [await operator_task(callcenter, phone=f"+86139000002{i:02d}") for i in range(10)]
    for task_id in tasks[::2]:  # asked for twice: before one live call per task, two seats could take these
        await citizen_asks_again(callcenter, task_id)
    keys: list[tuple[str, dict[str, str]]] = []
    async with transaction(d.sessionmaker) as session:
        for i in range(6):
            row, full = await create_key(session, role="operator", unit="3301", name=f"race-seat-{i}")
            keys.append((row.key_id, {"Authorization": f"Bearer {full}"}))
    for _, headers in keys:
        assert (await api.put("/v1/seat", json={"state": "available"}, headers=headers)).status_code == 200

    events = itertools.count()  # one event loop: the order in which requests went out and answers came back
    asked: dict[str, int] = {}  # seat -> when it last sent a claim (held=release may have returned what it held)
    latest: dict[str, _Held] = {}  # task -> its latest claim
    doubles: list[str] = []
    handed_over = 0  # claims of a task another seat had returned with held=release (the race this test is about)

    async def operator(n: int, key_id: str, headers: dict[str, str]) -> None:
        nonlocal handed_over
        for round_ in range(ROUNDS):
            asked[key_id] = next(events)
            resp = await api.post("/v1/queue/next", headers=headers, params={"held": "release"})
            answered = next(events)
            if resp.status_code == 204:
                continue
            assert resp.status_code == 200, resp.text
            task_id = resp.json()["task_id"]
            before = latest.get(task_id)
            if before is not None and (before.disposed or asked[before.seat] < before.answered):
                doubles.append(f"{task_id}: seat {key_id} while seat {before.seat} held it")
            elif before is not None and before.seat != key_id:
                handed_over += 1
            latest[task_id] = held = _Held(key_id, answered)
            # While this seat holds it, the database agrees: one running call of the task, this seat's.
            assert await live_operator_calls(callcenter, task_id) == [("running", f"seat:{key_id}")]
            if (round_ + n) % 4 == 3:
                done = await api.post(f"/v1/tasks/{task_id}/disposition", json={"disposition": "dissuaded"},
                                      headers=headers)
                assert done.status_code == 202, done.text
                held.disposed = True

    await asyncio.gather(*(operator(n, key_id, headers) for n, (key_id, headers) in enumerate(keys)))
    assert doubles == []
    assert handed_over > 0
    async with d.sessionmaker() as session:
        shared = (await session.execute(text(
            "SELECT task_id FROM jobs WHERE kind = 'call.operator' AND status IN ('queued', 'running')"
            " GROUP BY task_id HAVING count(*) > 1"))).all()
    assert shared == []


async def test_a_raised_tier_keeps_one_operator_call_and_makes_it_more_urgent(callcenter) -> None:
    """A raised tier's new plan reaching its operator-call step moves the waiting call up instead of adding one."""
    d = callcenter.dispatcher
    task_id = await operator_task(callcenter, phone="+8613900000301")
    raised = await d.client.post("/v1/warnings", json=warning(phone="+8613900000301", signal="screen_sharing",
                                                              region_code="330106"),
                                 headers=await d.headers("ingest", ""))
    assert raised.status_code == 201 and raised.json()["task_id"] == task_id, raised.text
    d.clock.advance(minutes=11)  # the high tier's plan calls for a person 10 minutes in
    await d.run_dispatcher_jobs()
    jobs = [j for j in await d.jobs(task_id=task_id, kind="call.operator") if j["status"] in ("queued", "running")]
    assert len(jobs) == 1 and jobs[0]["payload"]["tier"] == "high" and jobs[0]["payload"]["attempt"] == 1
