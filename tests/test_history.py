"""`shouhu export-history` and `shouhu plan --history`: a history's rates and the plan made from them, and the
export of a real simulated day (the tasks are there, the citizens' phone numbers are not)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.clock import LOCAL_TZ
from shouhu import history
from shouhu.cli import app
from shouhu.plan import agents_needed, make_plan, simulate_queues
from shouhu.sim.population import population
from shouhu.sim.run import simulate
from shouhu.sim.scenario import load
from tests.test_simulate import tiny

DAY0 = datetime(2026, 11, 20, tzinfo=LOCAL_TZ)
# Tasks per local hour of each day: quiet nights, a busy day, a middling evening (156 a day).
PER_HOUR = [2] * 8 + [10] * 12 + [5] * 4
DISTRICTS = ["330102", "330106", "330108", "330110"]
LINE_KEYS = {"created_at", "tier", "region_code", "seat_call", "seat_calls", "visit", "visits", "closed_after_s",
             "breached", "outcome"}


def write_history(path: Path, *, days: int = 2, talk_s: float | None = 200.0) -> int:
    """A history of `days` whole local days with PER_HOUR's profile: a quarter high tier, every other task a
    seat call (talking `talk_s`, None: unanswered), every tenth a visit (1,500 s from claim to report)."""
    lines = [{"format": "shouhu-history", "version": 1, "exported_at": "2026-11-23T00:00:00Z",
              "since": DAY0.isoformat(), "until": (DAY0 + timedelta(days=days)).isoformat(), "tz": "Asia/Shanghai"}]
    i = 0
    for day in range(days):
        for hour, count in enumerate(PER_HOUR):
            for k in range(count):
                at = DAY0 + timedelta(days=day, hours=hour, minutes=k * 60 / count)
                seat = i % 2 == 0
                visit = i % 10 == 0
                lines.append({
                    "created_at": at.isoformat(), "tier": "high" if i % 4 == 0 else ("medium" if i % 4 == 1 else "low"),
                    "region_code": DISTRICTS[i % 4], "seat_call": seat,
                    "seat_calls": [{"after_s": 600.0, "talk_s": talk_s}] if seat else [],
                    "visit": visit, "visits": [{"after_s": 2700.0, "wait_s": 300.0, "busy_s": 1500.0,
                                                "outcome": "dissuaded"}] if visit else [],
                    "closed_after_s": 3000.0, "breached": False, "outcome": "dissuaded"})
                i += 1
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return i


def test_a_history_gives_its_hourly_rates_shares_and_times(tmp_path: Path) -> None:
    """Two days of a known profile: per-hour rates per day, volume, tier mix, seat and visit shares, talk and
    officer times and districts come out as written."""
    path = tmp_path / "history.jsonl"
    n = write_history(path)
    assert n == 2 * sum(PER_HOUR) == 312
    d = history.derive(history.read(path), load())
    assert d.tasks == 312 and d.days == pytest.approx(2.0)
    assert d.hourly_rate == pytest.approx(PER_HOUR)
    assert d.per_day == pytest.approx(156)
    assert d.tier_mix == pytest.approx({"high": 0.25, "medium": 0.25, "low": 0.5})
    assert d.seat_share == pytest.approx(0.5) and d.visit_share == pytest.approx(0.1, abs=0.005)
    assert d.high_seat_share == pytest.approx(1.0)  # the high tier is every fourth task: all even
    assert d.seat_talk_s == pytest.approx(200.0) and d.seat_talk_calls == 156
    assert d.visit_busy_s == pytest.approx(1500.0)
    assert d.districts == 4
    assert d.high_in_time_pct == 100.0
    assert d.fallbacks == []


def test_a_history_plan_staffs_its_busiest_hour(tmp_path: Path) -> None:
    """The plan from a history sizes each hour's seats with Erlang C on the history's seat calls and talk time
    plus the default wrap-up, and the queue simulation with those seats meets the target."""
    path = tmp_path / "history.jsonl"
    write_history(path)
    base = load()
    d = history.derive(history.read(path), base)
    scenario, work, notes = history.workload(d, base)
    assert scenario.warnings_per_day == 156 and scenario.districts == 4 and scenario.bursts == []
    assert work.seat_handle_s == pytest.approx(200.0 + base.seats.wrap_up_s)
    assert work.officer_busy_s == pytest.approx(1500.0 + base.officers.travel_s)  # the way back is the default's
    assert any("wrap-up" in note for note in notes)
    plan = make_plan(scenario, work=work)
    # Busiest hour: 10 tasks an hour, half of them seat calls: 5 calls of 260 s.
    busiest = agents_needed(5 / 3600 * 260, handle_s=260, target_s=600, target_share=0.99, max_occupancy=0.85)
    assert plan.seats_by_hour[9] == busiest >= 1
    assert plan.seats_by_hour[3] <= busiest  # one call an hour at night needs no more
    assert plan.seats_by_shift["day"] == busiest
    assert plan.officers_per_district >= 1
    sim = simulate_queues(scenario, seats_by_shift=plan.seats_by_shift,
                          officers_per_district=plan.officers_per_district, work=work)
    assert sim["seat_calls"] > 0 and sim["seat_in_target_pct"] >= 99.0


def test_plan_history_prints_what_it_derived_and_the_fallbacks(tmp_path: Path) -> None:
    """`shouhu plan --history` prints the derived volume (tasks, days), the shift table, the simulation's
    check, and says which figures came from the default scenario (here: no seat call was ever answered)."""
    path = tmp_path / "history.jsonl"
    write_history(path, talk_s=None)
    result = CliRunner().invoke(app, ["plan", "--history", str(path), "--target-share", "0.95", "--json"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "derived from 312 tasks over 2.00 days (156 tasks a day" in out
    assert "no answered seat call in the history: the default talk time, 240 s" in out
    assert "Target: 95% of seat calls" in out
    assert re.search(r"^day\s+8-16\s+\d+", out, re.M)
    assert "Confirmed by simulation" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["plan_seats_total"] >= 1


def test_plan_history_refuses_a_file_that_is_not_one(tmp_path: Path) -> None:
    """A file without the history header is refused with the reason, not planned from."""
    path = tmp_path / "warnings.jsonl"
    path.write_text('{"phone": "13800138000"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["plan", "--history", str(path)])
    assert result.exit_code != 0
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # the message as typer's box wraps it
    assert "not a shouhu-history file" in said


def test_a_window_shorter_than_a_day_takes_the_default_shape_for_the_hours_it_missed(tmp_path: Path) -> None:
    """A history of 10:00-12:00 only: those hours' rates are the history's, the others follow the default
    profile at the same level, and the output says so."""
    path = tmp_path / "history.jsonl"
    write_history(path, days=1)
    lines = list(history.iter_lines(path))
    header = {**lines[0], "since": (DAY0 + timedelta(hours=10)).isoformat(),
              "until": (DAY0 + timedelta(hours=12)).isoformat()}
    kept = [t for t in lines[1:] if 10 <= datetime.fromisoformat(t["created_at"]).astimezone(LOCAL_TZ).hour < 12]
    path.write_text("\n".join(json.dumps(x) for x in [header, *kept]) + "\n", encoding="utf-8")
    base = load()
    d = history.derive(history.read(path), base)
    assert d.hourly_rate[10] == pytest.approx(10) and d.hourly_rate[11] == pytest.approx(10)
    level = 20 / (base.hourly_profile[10] + base.hourly_profile[11])
    assert d.hourly_rate[3] == pytest.approx(base.hourly_profile[3] * level)
    assert any("00-10h, 12-24h" in note for note in d.fallbacks)


@pytest.mark.slow
async def test_export_of_a_simulated_day_has_its_tasks_and_no_phone_numbers(server_url: str, tmp_path: Path) -> None:
    """A tiny day where nobody picks up the automated call and the seats call everyone: the export written from
    its database has one line per task with the documented fields, answered seat calls with their talk time,
    and none of the citizens' phone numbers (nor any other phone-like string)."""
    s = tiny(time_scale=150, telegram_share=0.0, answering={"auto_call_by_hour": [0.0] * 24})
    out = tmp_path / "history.jsonl"
    exported: dict[str, Any] = {}

    async def export(db_url: str) -> None:
        with out.open("w", encoding="utf-8") as f:
            exported["n"] = await history.export(db_url, f)

    run = await simulate(s, server_url=server_url, start_margin_s=None, before_drop=export)
    tasks = run.figures["sim_tasks"]
    assert tasks >= 5 and exported["n"] == tasks
    text = out.read_text(encoding="utf-8")
    for c in population(s):
        assert c.phone not in text and c.phone.lstrip("+") not in text
    assert not re.search(r"\d{11}", text)  # no mainland mobile number, with or without +86
    lines = list(history.iter_lines(out))
    assert lines[0]["format"] == "shouhu-history"
    assert len(lines) == 1 + tasks
    assert all(set(line) == LINE_KEYS for line in lines[1:])
    assert {line["tier"] for line in lines[1:]} == {"high"}
    talks = [c["talk_s"] for line in lines[1:] for c in line["seat_calls"] if c["talk_s"] is not None]
    assert talks and all(t > 0 for t in talks)  # the seats answered and talked
    assert all(line["seat_call"] for line in lines[1:] if line["seat_calls"])
    d = history.derive(history.read(out), load())
    assert d.tasks == tasks and d.districts == 2 and d.seat_share > 0 and d.seat_talk_s is not None


async def test_export_history_command_writes_the_window_without_personal_data(dispatcher: Any, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`shouhu export-history --since --until --out` against DATABASE_URL: the tasks created in the window, one
    line each with tier and district, and neither the phone numbers nor the subjects' names or ID numbers."""
    import asyncio

    from tests.conftest import T0, warning

    h = await dispatcher.headers("ingest", "")
    subject = {"name": "王小明", "age": 70, "id_number": "330106195601011235"}
    for i, signal in enumerate(("transfer_in_progress", "fraud_call_received", "fraud_sms_received")):
        r = await dispatcher.client.post("/v1/warnings", headers=h, json=warning(
            phone=f"1390000000{i}", signal=signal, region_code="330106", subject=subject))
        assert r.status_code == 201, r.text
    dispatcher.clock.advance(hours=30)  # a day later: outside the window exported below
    r = await dispatcher.client.post("/v1/warnings", headers=h, json=warning(phone="13900000009", region_code="330102"))
    assert r.status_code == 201, r.text
    out = tmp_path / "history.jsonl"
    monkeypatch.setenv("DATABASE_URL", dispatcher.db_url)
    since, until = T0.isoformat(), (T0 + timedelta(hours=24)).isoformat()
    result = await asyncio.to_thread(CliRunner().invoke, app, ["export-history", "--since", since, "--until", until,
                                                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 tasks exported" in result.output
    text = out.read_text(encoding="utf-8")
    for secret in ("1390000000", "王小明", "330106195601011235"):
        assert secret not in text
    lines = list(history.iter_lines(out))
    assert datetime.fromisoformat(lines[0]["since"]) == T0
    assert [line["region_code"] for line in lines[1:]] == ["330106"] * 3
    # 70 years old: the default policy raises each one a tier
    assert sorted(line["tier"] for line in lines[1:]) == ["high", "high", "medium"]
    assert all(set(line) == LINE_KEYS for line in lines[1:])
