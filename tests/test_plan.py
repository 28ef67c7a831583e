"""`shouhu plan`: Erlang C against hand-worked figures, and the plan for the default scenario."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from shouhu.plan import agents_needed, erlang_c, make_plan, mean_wait_s, service_level, simulate_queues
from shouhu.sim.scenario import load


def test_erlang_c_matches_the_hand_worked_example() -> None:
    """A = 2 Erlangs, N = 3: (8/6 * 3/1) / (1 + 2 + 2 + 4) = 4/9 of calls wait, as worked by hand."""
    # By hand: A^N/N! = 8/6; times N/(N-A) = 3 gives 4; sum_{k<3} A^k/k! = 1 + 2 + 2 = 5; C = 4 / (5 + 4).
    assert erlang_c(2.0, 3) == pytest.approx(4 / 9, rel=1e-12)
    # SL(20 s) with AHT 180 s: 1 - 4/9 * exp(-(3 - 2) * 20 / 180); ASA = 4/9 * 180 / 1 = 80 s.
    assert service_level(2.0, 3, handle_s=180, target_s=20) == pytest.approx(1 - 4 / 9 * math.exp(-1 / 9))
    assert mean_wait_s(2.0, 3, handle_s=180) == pytest.approx(80.0)


def test_erlang_c_at_call_centre_size_stays_finite() -> None:
    """Hundreds of seats (A^N and N! overflow a float) still give a probability, falling as seats are added."""
    values = [erlang_c(400.0, n) for n in (401, 410, 420, 450)]
    assert all(0 < v < 1 for v in values)
    assert values == sorted(values, reverse=True)
    assert erlang_c(400.0, 400) == 1.0  # as many seats as Erlangs: every call waits, the queue never empties


def test_agents_needed_is_the_fewest_meeting_the_target() -> None:
    """The answer meets the target and one seat fewer does not."""
    n = agents_needed(2.0, handle_s=180, target_s=20, target_share=0.8)
    assert service_level(2.0, n, handle_s=180, target_s=20) >= 0.8
    assert service_level(2.0, n - 1, handle_s=180, target_s=20) < 0.8
    # By hand: C(2, 4) = (16/24 * 4/2) / (1 + 2 + 2 + 8/6 + 4/3) = 0.1739; N=4 gives 1 - 0.1739 * e^(-2/9) = 0.861,
    # N=3 gives 0.602 (above): four seats.
    assert n == 4
    assert agents_needed(0.0, handle_s=180, target_s=20, target_share=0.8) == 0


def test_default_plan_meets_its_target_in_simulation() -> None:
    """The default scenario's plan names seats per shift and officers, and the queue simulation confirms them."""
    scenario = load()
    plan = make_plan(scenario)
    assert set(plan.seats_by_shift) == {s.name for s in scenario.seats.shifts}
    assert all(n > 0 for n in plan.seats_by_shift.values())
    assert plan.officers_per_district >= 1
    sim = simulate_queues(scenario, seats_by_shift=plan.seats_by_shift,
                          officers_per_district=plan.officers_per_district)
    assert sim["seat_in_target_pct"] >= 99.0
    assert sim["seat_calls"] > 0 and sim["visits"] > 0
    # Far fewer seats than Erlang asks for cannot meet it: the simulation is sensitive to staffing.
    starved = simulate_queues(scenario, seats_by_shift={k: max(1, v // 4) for k, v in plan.seats_by_shift.items()},
                              officers_per_district=plan.officers_per_district)
    assert starved["seat_in_target_pct"] < sim["seat_in_target_pct"]


def test_a_day_shorter_than_an_hour_is_simulated_and_no_demand_is_in_target() -> None:
    """A 12-minute day still sends its calls through the queue model (not zero hours of arrivals), and a day with
    nothing to staff reports 100% in target from both Erlang and simpy rather than 0%."""
    from tests.test_simulate import tiny

    busy = tiny(telegram_share=0.0, answering={"auto_call_by_hour": [0.0] * 24})
    plan = make_plan(busy)
    sim = simulate_queues(busy, seats_by_shift=plan.seats_by_shift, officers_per_district=plan.officers_per_district)
    assert plan.seats_by_shift["all"] >= 1
    assert sim["seat_calls"] > 0 and sim["seat_occupancy"] > 0
    quiet = tiny()  # everyone answers the machine: no seat call, no visit
    plan = make_plan(quiet)
    sim = simulate_queues(quiet, seats_by_shift=plan.seats_by_shift, officers_per_district=plan.officers_per_district)
    assert plan.seats_by_shift["all"] == 0 and plan.officers_per_district == 0
    assert plan.erlang_seat_sl == 1.0 and plan.erlang_visit_sl == 1.0
    assert sim["seat_in_target_pct"] == 100.0 and sim["visit_in_target_pct"] == 100.0


@pytest.mark.slow
def test_plan_live_prints_the_live_day_beside_erlang_and_simpy(tmp_path: Path, server_url: str) -> None:
    """`shouhu plan --live` on the tiny day where everyone answers (at any hour: --start-now): after Erlang and simpy
    it runs the day against the real services with the plan's staff, and prints (and reports in --json) the live figures, 100% in time,
    with their differences from Erlang's and simpy's."""
    import json

    import yaml
    from typer.testing import CliRunner

    from shouhu.cli import app
    from tests.test_simulate import tiny

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(time_scale=150, drain_h=0.15).model_dump()), encoding="utf-8")  # closes in minutes
    result = CliRunner().invoke(app, ["plan", str(path), "--live", "--start-now", "--database-url", server_url,
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Confirmed by the live day" in out
    row = next(line for line in out.splitlines() if line.startswith("high tier in time (%)"))
    # Erlang, simpy, live, live-Erlang, live-simpy
    assert row.split()[-5:] == ["100.00", "100.00", "100.00", "+0.00", "+0.00"]
    assert any(line.startswith("seat occupancy") for line in out.splitlines())
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["plan_live_high_in_time_pct"] == 100.0
    assert figures["plan_live_warnings_sent"] >= 5 and figures["plan_live_breaches"] == 0
    assert figures["plan_live_high_tasks"] == figures["plan_live_warnings_sent"]


def test_plan_live_refuses_a_history(tmp_path: Path) -> None:
    """--live with --history is refused (a history has no citizens to simulate), before anything runs."""
    from typer.testing import CliRunner

    from shouhu.cli import app

    path = tmp_path / "history.jsonl"
    path.write_text('{"format": "shouhu-history", "version": 1, "since": "2026-11-20T00:00:00Z",'
                    ' "until": "2026-11-21T00:00:00Z", "tz": "Asia/Shanghai"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["plan", "--history", str(path), "--live"])
    assert result.exit_code != 0
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # the message as typer's box wraps it
    assert "a history has no citizens to simulate" in said
