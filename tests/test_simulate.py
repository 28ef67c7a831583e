"""`shouhu simulate`: a tiny day end to end against the real services, its figures, and its HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shouhu.sim import report
from shouhu.sim.figures import breach_cause, percentile
from shouhu.sim.population import population
from shouhu.sim.run import private_server, simulate
from shouhu.sim.scenario import DEFAULT_SCENARIO, Scenario, load

ALWAYS = [1.0] * 24


def tiny(**overrides: Any) -> Scenario:
    """A few minutes of a day on a x60 clock: 2 districts, high tier only, 2 seats, 1 officer per district."""
    data: dict[str, Any] = {
        "name": "tiny", "seed": 3, "time_scale": 60, "day_h": 0.2, "start_h": 10, "drain_h": 0.3,
        "warnings_per_day": 1920, "hourly_profile": [1] * 24, "tier_mix": {"high": 1.0},
        "fraud_types": {"task_brushing": 1.0}, "ages": [{"min_age": 25, "max_age": 35, "share": 1.0}],
        "telegram_share": 0.5, "districts": 2,
        "answering": {"auto_call_by_hour": ALWAYS, "operator_call_by_hour": ALWAYS, "ring_s": 2,
                      "telegram_press": 1.0, "telegram_read_median_s": 10,
                      "says": {"acknowledged": 1.0, "loss_reported": 0.0, "callback_requested": 0.0, "not_me": 0.0}},
        "seats": {"shifts": [{"name": "all", "start_h": 0, "end_h": 24, "seats": 2}], "handle_s": 60,
                  "wrap_up_s": 10},
        "officers": {"per_district": 1, "travel_s": 300, "visit_s": 300, "found_share": 1.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Scenario.model_validate(data)


def test_default_scenario_loads_at_zhejiang_scale() -> None:
    """The documented default is the issue's day: ~30,000 warnings, 1,580 seats, 100 districts, one 5,000 burst."""
    s = load(DEFAULT_SCENARIO)
    assert s.warnings_per_day == 30000 and s.districts == 100
    assert sum(sh.seats for sh in s.seats.shifts) == 1580
    assert [b.count for b in s.bursts] == [5000]
    assert len(set(s.region_codes())) == 100


def test_a_scenario_whose_shares_do_not_add_up_is_refused(tmp_path: Path) -> None:
    """A scenario file with a tier mix that does not sum to 1 fails on load, naming the field."""
    data = yaml.safe_load(DEFAULT_SCENARIO.read_text(encoding="utf-8"))
    data["tier_mix"] = {"high": 0.5, "medium": 0.1, "low": 0.1}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match="tier_mix"):
        load(path)


def test_population_follows_the_scenario() -> None:
    """The drawn day has the scenario's volume, a unique phone per citizen and the burst inside its ten minutes."""
    s = load(DEFAULT_SCENARIO).model_copy(update={"volume_fraction": 0.05})
    people = population(s)
    assert abs(len(people) - s.sent_warnings()) < 0.1 * s.sent_warnings()
    assert len({c.phone for c in people}) == len(people)
    burst = [c for c in people if 10.5 * 3600 <= c.at_s < 10.5 * 3600 + 600]
    assert len(burst) >= round(5000 * 0.05)
    assert 0.2 < sum(c.has_chat for c in people) / len(people) < 0.4


def test_percentile_and_breach_causes() -> None:
    """Nearest-rank percentiles, and a breach's cause read from the task's own state in pipeline order (a late
    close that waited for an officer named as such)."""
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 50) is None
    base = {"outcome": None, "closed_at": None, "emergency_at": None, "human_at": None, "first_alert_at": None,
            "first_call_at": None, "visits": None}
    assert breach_cause(base) == "never_attempted"
    assert breach_cause({**base, "first_call_at": 1}) == "never_reached_no_visit"
    assert breach_cause({**base, "first_call_at": 1, "visits": ["open:"]}) == "visit_waiting"
    assert breach_cause({**base, "first_call_at": 1, "visits": ["reported:not_found"]}) == "visit_not_found"
    assert breach_cause({**base, "emergency_at": 1}) == "emergency_open"
    assert breach_cause({**base, "closed_at": 1, "outcome": "unreachable"}) == "closed_late"
    # Closed late after a visit waited more than half an hour for an officer: the officers' shortfall, said so.
    assert breach_cause({**base, "closed_at": 1, "visits": ["reported:dissuaded"], "visit_wait_max_s": 4_800}) \
        == "closed_late_officer_wait"
    assert breach_cause({**base, "closed_at": 1, "visits": ["reported:dissuaded"], "visit_wait_max_s": 600}) \
        == "closed_late"


@pytest.mark.slow
async def test_tiny_day_everyone_answering_at_once_is_all_in_time(tmp_path: Path) -> None:
    """Every citizen picks up the first automated call and presses 1 (and half press the Telegram button): every
    sent warning has a task, every high-tier task closes in time, nobody breaches, no visit is needed."""
    s = tiny()
    async with private_server() as url:
        run = await simulate(s, server_url=url, start_margin_s=None)
    f = run.figures
    sent = f["sim_warnings_sent"]
    assert sent == len(population(s)) and sent >= 5
    assert f["sim_warnings_lost"] == 0
    assert f["sim_high_tasks"] == sent
    assert f["sim_high_in_time_pct"] == 100.0
    assert f["sim_breaches"] == 0
    assert f["sim_visits_requested"] == 0
    assert f["sim_never_reached_high"] == 0
    assert f["sim_first_attempt_p95_s"] is not None and f["sim_first_attempt_p95_s"] < 60
    assert f["sim_agent_failures"] == []
    assert set(f["sim_outcomes"]) <= {"acknowledged"}
    assert f["sim_alerts_sent"] >= 1  # the citizens with a chat got the Telegram alert too
    # The report renders from these figures (its charts are checked in a browser below).
    page = report.write(tmp_path / "tiny.html", f, run.samples, run.notes)
    assert "瓶颈" in page.read_text(encoding="utf-8")


@pytest.mark.slow
async def test_tiny_day_without_seats_goes_to_officers() -> None:
    """Nobody picks up an automated call and no seat is on duty: at 45 minutes officers are sent, claim, visit and
    report through the field API; the figures show the visits requested and completed and the tasks dissuaded."""
    s = tiny(time_scale=200, day_h=0.1, drain_h=2.0, telegram_share=0.0,
             answering={"auto_call_by_hour": [0.0] * 24, "operator_call_by_hour": [0.0] * 24},
             seats={"shifts": [{"name": "none", "start_h": 0, "end_h": 24, "seats": 0}]},
             officers={"per_district": 1, "travel_s": 120, "visit_s": 120, "found_share": 1.0, "poll_every_s": 30})
    async with private_server() as url:
        run = await simulate(s, server_url=url, start_margin_s=None)
    f = run.figures
    sent = f["sim_warnings_sent"]
    assert f["sim_warnings_lost"] == 0
    assert f["sim_visits_requested"] == sent
    assert f["sim_visits_completed"] == sent
    assert f["sim_outcomes"] == {"dissuaded": sent}
    assert f["sim_first_human_p95_s"] >= 45 * 60  # nobody is met before the visit is sent
    assert f["sim_agent_counts"].get("seat_claims", 0) == 0


@pytest.mark.slow
async def test_tiny_day_nobody_reachable_ends_with_the_supervisor() -> None:
    """Nobody answers a robocall or a seat, and no visit finds anyone: each seat's `unreachable` sends officers
    at once (the task stays open), the supervisor sends them once more, then closes the loop as unreachable."""
    s = tiny(time_scale=200, day_h=0.1, drain_h=2.0, telegram_share=0.0,
             answering={"auto_call_by_hour": [0.0] * 24, "operator_call_by_hour": [0.0] * 24},
             seats={"shifts": [{"name": "all", "start_h": 0, "end_h": 24, "seats": 2}], "handle_s": 30,
                    "wrap_up_s": 5},
             officers={"per_district": 2, "travel_s": 120, "visit_s": 120, "found_share": 0.0, "poll_every_s": 30})
    async with private_server() as url:
        run = await simulate(s, server_url=url, start_margin_s=None)
    f = run.figures
    sent = f["sim_warnings_sent"]
    counts = f["sim_agent_counts"]
    assert f["sim_warnings_lost"] == 0 and sent >= 1
    assert counts.get("disposition_unreachable", 0) >= sent  # every citizen's seat call reached nobody
    assert f["sim_visits_requested"] == 2 * sent and counts.get("supervisor_second_visits") == sent
    assert f["sim_outcomes"] == {"unreachable": sent} and f["sim_closed_unreachable"] == sent
    assert f["sim_never_reached_high"] == sent


async def test_report_renders_every_chart_in_chromium(tmp_path: Path, page: Any) -> None:
    """The HTML report opens from a file and each of its five charts paints pixels (Chart.js inlined)."""
    figures = {"sim_high_in_time_pct": 99.5, "sim_medium_in_time_pct": 97.0, "sim_low_in_time_pct": 100.0,
               "sim_first_attempt_p50_s_high": 3.0, "sim_first_attempt_p95_s_high": 12.0,
               "sim_first_human_p50_s_high": 300.0, "sim_first_human_p95_s_high": 1500.0,
               "sim_first_attempt_p95_s": 12.0, "sim_first_human_p95_s": 1500.0, "sim_seat_occupancy": 0.4,
               "sim_breaches": 3, "sim_warnings_lost": 0, "sim_warnings_sent": 100,
               "sim_breach_causes": {"visit_not_found": 2, "closed_late": 1},
               "sim_breaches_by_district": {"330101": {"visit_not_found": 2}, "330102": {"closed_late": 1}},
               "sim_visits_requested": 5, "sim_visits_completed": 4, "sim_emergencies": 2,
               "sim_payment_stops": {"confirmed": 1, "failed": 1}}
    samples = [{"t_s": 300 * i, "hour": 300 * i / 3600, "queued_operator_calls": i % 4, "seats_on_duty": 10,
                "seats_busy": i % 7} for i in range(30)]
    path = report.write(tmp_path / "report.html", figures, samples, ["note"], lang="zh")
    await page.goto(path.as_uri())
    painted = await page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n; })""")
    assert len(painted) == 5
    assert all(n > 500 for n in painted), painted
    assert "瓶颈" in await page.inner_text("#bottleneck")
    english = report.write(tmp_path / "report-en.html", figures, samples, ["note"], lang="en")
    await page.goto(english.as_uri())
    assert "Bottleneck" in await page.inner_text("#bottleneck")
