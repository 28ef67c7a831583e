"""A seat's claim on a fast clock (SHOUHU_TIME_SCALE): the operator is a person, so the lease lasts real minutes."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.queue import service as q
from tests.callcenter.test_seats import api, operator_task, seat  # noqa: F401 - api is a fixture

SCALE = 60


async def test_a_claim_on_a_60x_clock_lasts_ten_real_minutes(callcenter, api) -> None:  # noqa: ANN001, F811
    """At 60x a medium-tier claim is held 10 real minutes (600 on the clock), not 10 seconds; then it returns."""
    clock = callcenter.dispatcher.clock
    clock.scale = SCALE  # the frozen clock stands for a 60x one: the services stretch real durations by it
    task_id = await operator_task(callcenter, phone="+8613900000061")
    headers = await seat(callcenter, api, unit="3301")
    claimed = await api.post("/v1/queue/next", headers=headers)
    assert claimed.status_code == 200 and claimed.json()["task_id"] == task_id
    expires = datetime.fromisoformat(claimed.json()["claim_expires_at"].replace("Z", "+00:00"))
    assert expires - clock.now() == timedelta(minutes=10 * SCALE)

    async def reclaimed() -> int:
        async with callcenter.app.state.sessionmaker() as session, session.begin():
            return await q.reclaim_expired(session, now=clock.now())

    clock.advance(minutes=11)  # past the lease at wall time; 11 real seconds here
    assert await reclaimed() == 0
    clock.advance(minutes=10 * SCALE)
    assert await reclaimed() == 1
