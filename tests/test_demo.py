"""`shouhu demo` end to end: the three services, the sandbox and a fast clock, as `make run` starts them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.clock import ScaledClock
from shouhu.demo import plan_day, run_demo
from tests.conftest import eventually
from tests.helpers.system import make_keys, running_system

# A 2 h deadline passes in 12 s: the opening burst's breach comes well inside the wait below.
SCALE = 600.0
WAIT_S = 120.0  # the bound on every wait (a loaded CI machine); each ends as soon as its outcome is there


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float = WAIT_S) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` never happened."""
    return await eventually(check, timeout_s, what=what, every_s=0.25)


def test_the_demo_day_is_realistic() -> None:
    """The planned day spans six districts, the fraud types and signals, mostly 20-40 year olds, repeats and every path."""
    plans = plan_day(run_id="t", count=300)
    records = [p.record for p in plans]
    assert len(records) == 300
    assert len({r["source_ref"] for r in records}) == 300
    assert {r["region_code"] for r in records} == {"330102", "330106", "330108", "330110", "330212", "330302"}
    assert len({r["fraud_type"] for r in records}) >= 10 and len({r["signal"] for r in records}) == 8
    ages = [r["subject"]["age"] for r in records]
    assert sum(20 <= a < 40 for a in ages) > 0.7 * len(ages)
    assert any(a >= 65 for a in ages) and any(a < 20 for a in ages)
    assert len({r["phone"] for r in records}) < len(records)  # repeats about the same person
    shows = {p.showcase for p in plans if p.showcase}
    assert shows == {"unanswered_alert", "unreachable", "emergency", "acknowledged"}
    assert all(p.offset_s == 0 for p in plans if p.showcase)
    assert plan_day(run_id="other", count=300)[0].record["source_ref"] != records[0]["source_ref"]


async def test_shouhu_demo_shows_the_system_alive(db_url: str) -> None:
    """On a fast clock the demo gives an operator a task, a delivered alert, a breach, an escalation, an emergency, a visit."""
    clock = ScaledClock(SCALE, datetime.now(UTC))
    made = await make_keys(db_url, {"ingest": "33", "supervisor": "33", "operator": "33", "officer": "33"})
    # As `shouhu sandbox` does on a fast clock: the phones' waits shrink by the same factor.
    async with running_system(db_url, clock, phone_time_scale=1 / SCALE) as urls:
        # A short day (2 h of clock: 12 s here) so the test posts every wave; the paced path as `make run` runs it.
        report = await run_demo(dispatcher_url=urls["dispatcher"], ingest_key=made["ingest"],
                                sandbox_url=urls["sandbox"], clock=clock, count=40, at_once=False,
                                day_s=2 * 3600, say=lambda _line: None)
        assert report.posted == 40 and report.statuses["rejected"] == 0
        assert report.chats_bound, "no Telegram chat was bound in the sandbox"

        def bearer(role: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {made[role]}"}

        async with httpx.AsyncClient(base_url=urls["dispatcher"], headers=bearer("supervisor"), timeout=30) as api, \
                httpx.AsyncClient(base_url=urls["sandbox"], timeout=30) as sandbox, \
                httpx.AsyncClient(base_url=urls["callcenter"], headers=bearer("operator"), timeout=30) as seat:

            async def alert_delivered() -> bool:
                for chat in report.chats_bound:
                    body = (await sandbox.get(f"/sandbox/telegram/chats/{chat}/messages",
                                              params={"from": "bot"})).json()
                    if any("inline_keyboard" in (m.get("reply_markup") or {}) for m in body["messages"]):
                        return True
                return False

            async def breached() -> list[Any]:
                return (await api.get("/v1/tasks", params={"breached": "true"})).json()["items"]

            async def escalated() -> list[Any]:
                return (await api.get("/v1/audit", params={"action": "task.escalated"})).json()["items"]

            async def emergencies() -> list[Any]:
                return (await api.get("/v1/emergencies")).json()["items"]

            async def visits() -> list[Any]:
                return (await api.get("/v1/visits", headers=bearer("officer"))).json()["items"]

            await until("an alert with its buttons delivered in the Telegram sandbox", alert_delivered)
            await until("an emergency (a citizen pressed 3: already transferred)", emergencies)
            await until("a visit sent to a district", visits)
            await until("a supervisor escalation", escalated)
            await until("a breached task", breached)

            (await seat.put("/v1/seat", json={"state": "available"})).raise_for_status()
            claimed = await until("an operator claiming a task from the queue",
                                  lambda: _claim(seat))
            assert claimed["task_id"] and claimed["tier"] in ("high", "medium", "low")


async def _claim(seat: httpx.AsyncClient) -> dict[str, Any] | None:
    resp = await seat.post("/v1/queue/next")
    assert resp.status_code in (200, 204), resp.text
    return resp.json() if resp.status_code == 200 else None


def test_shouhu_up_loads_the_demo_only_on_an_empty_development_database_with_the_sandbox() -> None:
    """`make run` loads the demo on a fresh database, never when told not to, with data, in production or with real providers."""
    from shouhu.cli import demo_wanted

    def wanted(flag: bool = True, environment: str = "development", empty: bool = True, **environ: str) -> bool:
        return demo_wanted(flag=flag, environ=environ, environment=environment, database_is_empty=lambda: empty)

    assert wanted()
    assert not wanted(SHOUHU_DEMO="0")
    assert not wanted(flag=False)
    assert not wanted(empty=False)
    assert not wanted(environment="production")
    assert not wanted(TELEGRAM_BOT_TOKEN="123:real")
    assert not wanted(TWILIO_ACCOUNT_SID="AC" + "0" * 32)
