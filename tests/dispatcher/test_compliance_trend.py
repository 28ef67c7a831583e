"""The supervisor's 30-day trend (reports.service.daily_trend): compliance per local day, tier and child unit."""

from __future__ import annotations

from datetime import date, timedelta

from services.dispatcher.reports.service import daily_trend
from tests.conftest import T0, warning


async def open_task(dispatcher, **fields) -> str:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(**fields),
                                        headers=await dispatcher.headers("ingest", ""))
    assert resp.status_code == 201, resp.text
    return resp.json()["task_id"]


async def close(dispatcher, task_id: str, outcome: str = "dissuaded") -> None:  # noqa: ANN001
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": outcome},
                                        headers=await dispatcher.headers("officer", "33"))
    assert resp.status_code == 200, resp.text


async def trend(dispatcher, unit: str = "33", days: int = 30) -> dict:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session, session.begin():
        return await daily_trend(session, unit=unit, now=dispatcher.clock.now(), days=days)


async def test_yesterday_one_high_task_in_time_and_one_breached_make_fifty_per_cent(dispatcher) -> None:  # noqa: ANN001
    """Yesterday (local) a Hangzhou high task closed in time and a Ningbo one breached: 1/2 for the province,
    1/1 for 3301, 0/1 for 3302; today nothing decided yet; an open task and another province count nowhere."""
    in_time = await open_task(dispatcher, phone="13900000101", signal="transfer_in_progress", region_code="330106")
    await open_task(dispatcher, phone="13900000102", signal="transfer_in_progress", region_code="330206")
    await open_task(dispatcher, phone="13900000103", signal="transfer_in_progress", region_code="440106")
    await open_task(dispatcher, phone="13900000104", region_code="330106")  # low: due in 72 h, still open
    dispatcher.clock.advance(minutes=30)
    await close(dispatcher, in_time)
    dispatcher.clock.advance(minutes=91)  # past the 2 h deadline: the Ningbo task is decided, breached
    await dispatcher.run_dispatcher_jobs()
    dispatcher.clock.set(T0 + timedelta(days=1))  # the next morning, 10:00 in Hangzhou
    found = await trend(dispatcher)
    assert len(found["days"]) == 30 and found["days"][-1] == date(2026, 11, 22) and found["units"] == ["3301", "3302"]
    whole = found["series"][""]
    assert whole["high"]["decided"][-2:] == [2, 0] and whole["high"]["in_time"][-2:] == [1, 0]
    assert whole["high"]["rate"][-2:] == [0.5, None] and whole["all"]["rate"][-2] == 0.5
    assert whole["low"]["decided"] == [0] * 30 and sum(whole["all"]["decided"]) == 2
    assert found["series"]["3301"]["high"]["rate"][-2] == 1.0
    assert found["series"]["3302"]["high"]["rate"][-2] == 0.0
    district = await trend(dispatcher, unit="330106")
    assert district["units"] == [] and district["series"][""]["high"]["rate"][-2] == 1.0


async def test_a_day_is_a_day_in_china_not_in_utc(dispatcher) -> None:  # noqa: ANN001
    """A task closed at 00:30 Beijing time (16:30 UTC the day before) counts on the Beijing day it closed."""
    task_id = await open_task(dispatcher, phone="13900000105", signal="fraud_call_received", region_code="330106")
    dispatcher.clock.set(T0 + timedelta(hours=14, minutes=30))  # 2026-11-21 16:30 UTC = 11-22 00:30 CST
    await close(dispatcher, task_id)
    found = await trend(dispatcher, days=3)
    assert found["days"] == [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)]
    assert found["series"][""]["medium"]["decided"] == [0, 0, 1]
