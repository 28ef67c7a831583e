"""`shouhu plan`: how many seats per shift and officers per district a scenario needs to meet its target.

First answer: queueing theory. Each hour's seat calls are an M/M/N queue (Poisson arrivals, exponential
handling, N seats), sized with Erlang C; each district's visits are another. Then the same arrivals run
through a discrete-event model (simpy) with the hourly profile, the burst and the shift changes that Erlang C
assumes away, and both answers are printed with their difference.

Erlang C is written here rather than taken from pyworkforce: pyworkforce 0.5.4 needs Python >= 3.12 (the
project runs 3.11) and the older releases pull ortools and pandas (hundreds of MB) for the thirty lines below.
The formulas are the textbook ones (e.g. Gans, Koole & Mandelbaum, "Telephone call centers: tutorial, review,
and research prospects", M&SOM 5(2), 2003, section 4.1):

    A = lambda * AHT                                        offered load, in Erlangs
    C(N, A) = (A^N / N!) * N/(N-A) / (sum_{k<N} A^k/k! + (A^N / N!) * N/(N-A))     P(a call waits), N > A
    SL(t) = 1 - C(N, A) * exp(-(N - A) * t / AHT)           P(wait <= t)
    ASA = C(N, A) * AHT / (N - A)                           mean wait

computed through the Erlang B recursion B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1)), C = N B / (N - A (1 - B)),
which never forms A^N or N! (both overflow a float for N in the hundreds).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from shouhu.sim.scenario import Scenario

# ---- Erlang C ----------------------------------------------------------------------------------------------


def erlang_b(traffic: float, agents: int) -> float:
    """Blocking probability of N servers offered A Erlangs with no queue (the recursion above)."""
    b = 1.0
    for k in range(1, agents + 1):
        b = traffic * b / (k + traffic * b)
    return b


def erlang_c(traffic: float, agents: int) -> float:
    """P(an arriving call waits) with N agents and A Erlangs; 1 when N <= A (the queue grows without end)."""
    if agents <= traffic:
        return 1.0
    b = erlang_b(traffic, agents)
    return agents * b / (agents - traffic * (1 - b))


def service_level(traffic: float, agents: int, *, handle_s: float, target_s: float) -> float:
    """P(wait <= target_s): the share of calls answered within the target (all of none: 1 with no traffic)."""
    if traffic <= 0:
        return 1.0
    if agents <= traffic:
        return 0.0
    return 1.0 - erlang_c(traffic, agents) * math.exp(-(agents - traffic) * target_s / handle_s)


def mean_wait_s(traffic: float, agents: int, *, handle_s: float) -> float:
    if agents <= traffic:
        return math.inf
    return erlang_c(traffic, agents) * handle_s / (agents - traffic)


def agents_needed(traffic: float, *, handle_s: float, target_s: float, target_share: float,
                  max_occupancy: float = 1.0) -> int:
    """The fewest agents whose service level meets the target and whose occupancy A/N stays at or below the cap."""
    if traffic <= 0:
        return 0
    agents = max(1, math.floor(traffic) + 1, math.ceil(traffic / max_occupancy))
    while service_level(traffic, agents, handle_s=handle_s, target_s=target_s) < target_share:
        agents += 1
    return agents


# ---- demand from a scenario --------------------------------------------------------------------------------

# Automated call attempts that fit before a person is due (high: retries at 5 min, the seat's call at 10 min).
AUTO_ATTEMPTS = {"high": 2, "medium": 3, "low": 3}


def _reached_by_machine(s: Scenario, hour: int, tier: str) -> float:
    """P(the citizen answers the Telegram alert or an automated call) before a person is needed."""
    tg = s.telegram_share * s.answering.telegram_press
    p = s.answering.auto_call_by_hour[hour]
    phone = 1 - (1 - p) ** AUTO_ATTEMPTS[tier]
    return 1 - (1 - tg) * (1 - phone)


def operator_share(s: Scenario, hour: int, tier: str) -> float:
    """Estimated share of warnings that need a seat's call: nobody reached by machine, or asked for a person."""
    closing = s.answering.says["acknowledged"] + s.answering.says["loss_reported"]
    return 1 - _reached_by_machine(s, hour, tier) * closing


def visit_share(s: Scenario, hour: int, tier: str) -> float:
    """Estimated share that needs a visit: a seat's call was needed and the seat did not reach them either."""
    return operator_share(s, hour, tier) * (1 - s.answering.operator_call_by_hour[hour])


def hourly_demand(s: Scenario) -> list[dict[str, float]]:
    """Per local hour, at full province volume: warnings, seat calls and visits expected (bursts included)."""
    rows = []
    for hour, warnings in enumerate(s.hourly_warnings()):
        by_tier = {t: warnings * s.tier_mix.get(t, 0) for t in ("high", "medium", "low")}
        for burst in s.bursts:
            if int(burst.at_h) == hour:
                for t, share in burst.tier_mix.items():
                    by_tier[t] += burst.count * share
        rows.append({"hour": hour, "warnings": sum(by_tier.values()),
                     "seat_calls": sum(n * operator_share(s, hour, t) for t, n in by_tier.items()),
                     "visits": sum(n * visit_share(s, hour, t) for t, n in by_tier.items())})
    return rows


@dataclass
class Workload:
    """What the staff must absorb, at full volume: per local hour the seat calls and visits expected, what each
    costs (seconds of a seat, of an officer), over how many districts; and the high tier's shares needing a seat
    call and a visit (for the expected share of the high tier in time). From a scenario (`workload_of`) or from
    an exported history (shouhu/history.py)."""

    demand: list[dict[str, float]]
    seat_handle_s: float
    officer_busy_s: float
    districts: int
    high_seat_share: float
    high_visit_share: float


def workload_of(s: Scenario) -> Workload:
    """The scenario's workload: its hourly demand (answer rates, bursts) and its talk, wrap-up and travel times."""
    demand = hourly_demand(s)
    weights = [row * s.tier_mix.get("high", 0) for row in s.hourly_warnings()]
    total = sum(weights) or 1.0
    return Workload(demand=demand, seat_handle_s=s.seats.handle_s + s.seats.wrap_up_s,
                    officer_busy_s=2 * s.officers.travel_s + s.officers.visit_s, districts=s.districts,
                    high_seat_share=sum(w * operator_share(s, h, "high") for h, w in enumerate(weights)) / total,
                    high_visit_share=sum(w * visit_share(s, h, "high") for h, w in enumerate(weights)) / total)


# ---- the plan ----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    seats_by_shift: dict[str, int]
    seats_by_hour: list[int]
    officers_per_district: int
    seat_handle_s: float
    officer_busy_s: float
    demand: list[dict[str, float]]
    target: dict[str, float]
    work: Workload
    erlang_seat_sl: float = 0.0
    erlang_visit_sl: float = 0.0
    erlang_seat_occupancy: float = 0.0
    simulated: dict[str, Any] = field(default_factory=dict)
    # `shouhu plan --live`: the figures of `shouhu simulate`'s day run with this plan's staff.
    live: dict[str, Any] = field(default_factory=dict)

    def high_in_time_pct(self, seat_sl: float, visit_sl: float) -> float:
        """The high tier's expected share in time (0-100) given the share of seat calls and of visits in target:
        a high-tier task is late only when its seat call or its visit waits past the target."""
        late = self.work.high_seat_share * (1 - seat_sl) + self.work.high_visit_share * (1 - visit_sl)
        return round(100 * max(0.0, 1 - late), 2)

    def figures(self) -> dict[str, Any]:
        figures = {"plan_seats_by_shift": self.seats_by_shift, "plan_seats_total": sum(self.seats_by_shift.values()),
                   "plan_officers_per_district": self.officers_per_district,
                   "plan_erlang_seat_in_target_pct": round(100 * self.erlang_seat_sl, 2),
                   "plan_erlang_visit_in_target_pct": round(100 * self.erlang_visit_sl, 2),
                   "plan_erlang_seat_occupancy": round(self.erlang_seat_occupancy, 3),
                   "plan_erlang_high_in_time_pct": self.high_in_time_pct(self.erlang_seat_sl, self.erlang_visit_sl),
                   **{f"plan_sim_{k}": v for k, v in self.simulated.items()}}
        if self.simulated:
            figures["plan_sim_high_in_time_pct"] = self.high_in_time_pct(
                self.simulated["seat_in_target_pct"] / 100, self.simulated["visit_in_target_pct"] / 100)
        figures.update({f"plan_live_{k}": v for k, v in self.live.items()})
        return figures


def make_plan(s: Scenario, *, work: Workload | None = None, max_occupancy: float = 0.85) -> Plan:
    """Erlang C per hour (seats) and per district at the peak hour (officers), at full province volume.

    `work`: the demand to staff for (default: the scenario's own; shouhu/history.py passes a history's); the
    scenario still gives the shifts, the target and the day."""
    work = work or workload_of(s)
    target = s.plan_target
    share = target["high_in_time"]
    seat_handle_s = work.seat_handle_s
    demand = work.demand
    seats_by_hour = [agents_needed(row["seat_calls"] / 3600 * seat_handle_s, handle_s=seat_handle_s,
                                   target_s=target["seat_wait_s"], target_share=share, max_occupancy=max_occupancy)
                     for row in demand]
    by_shift: dict[str, int] = {}
    for shift in s.seats.shifts:
        hours = [h % 24 for h in range(int(shift.start_h), int(math.ceil(shift.end_h)))]
        by_shift[shift.name] = max((seats_by_hour[h] for h in hours), default=0)
    officer_busy_s = work.officer_busy_s
    peak_visits_per_district = max(row["visits"] for row in demand) / work.districts
    visit_traffic = peak_visits_per_district / 3600 * officer_busy_s
    officers = agents_needed(visit_traffic, handle_s=officer_busy_s, target_s=target["visit_wait_s"],
                             target_share=share)
    plan = Plan(by_shift, seats_by_hour, officers, seat_handle_s, officer_busy_s, demand, dict(target), work)
    # The service level Erlang promises at the busiest hour with the planned staff.
    peak = max(range(24), key=lambda h: demand[h]["seat_calls"])
    plan.erlang_seat_sl = service_level(demand[peak]["seat_calls"] / 3600 * seat_handle_s,
                                        _shift_seats(s, plan.seats_by_shift, peak), handle_s=seat_handle_s,
                                        target_s=target["seat_wait_s"])
    plan.erlang_visit_sl = service_level(visit_traffic, officers, handle_s=officer_busy_s,
                                         target_s=target["visit_wait_s"])
    # Occupancy over the day as Erlang sees it: the offered seat-hours over the seat-hours on duty (the same
    # ratio `shouhu simulate` reports as sim_seat_occupancy).
    on_duty_s = sum(_shift_seats(s, plan.seats_by_shift, h) * length_s for h, length_s in _day_hours(s))
    offered_s = sum(demand[h]["seat_calls"] * seat_handle_s * length_s / 3600 for h, length_s in _day_hours(s))
    plan.erlang_seat_occupancy = offered_s / on_duty_s if on_duty_s else 0.0
    return plan


def _day_hours(s: Scenario) -> list[tuple[int, float]]:
    """The day's hours as (local hour, seconds of it in the day): a day of 0.2 h is 720 s of its first hour."""
    return [(int(s.start_h + h) % 24, 3600 * (min(h + 1, s.day_h) - h)) for h in range(math.ceil(s.day_h))]


def _shift_seats(s: Scenario, seats_by_shift: dict[str, int], hour: float) -> int:
    total = 0
    for shift in s.seats.shifts:
        if any(shift.start_h <= h < shift.end_h for h in (hour, hour + 24)):
            total += seats_by_shift.get(shift.name, 0)
    return total


# ---- confirmation by simulation (simpy, no services: seconds) -----------------------------------------------


def simulate_queues(s: Scenario, *, seats_by_shift: dict[str, int], officers_per_district: int,
                    seed: int | None = None, work: Workload | None = None) -> dict[str, float]:
    """The planned staff against the scenario's hourly arrivals (Poisson within each hour, the burst spread
    over its minutes), exponential handling, seats joining and leaving at shift changes; a day plus its drain.
    Returns the share of seat calls claimed within seat_wait_s and of visits started within visit_wait_s."""
    import simpy

    work = work or workload_of(s)
    rng = random.Random(s.seed if seed is None else seed)
    env = simpy.Environment()
    target = s.plan_target
    seat_handle_s = work.seat_handle_s
    officer_busy_s = work.officer_busy_s
    seats = simpy.Store(env)
    waits: dict[str, list[float]] = {"seat": [], "visit": []}
    busy_s = [0.0]
    districts = [simpy.Resource(env, capacity=max(1, officers_per_district)) for _ in range(work.districts)]

    def shifts() -> Any:
        on = 0
        for hour in range(int(s.day_h + s.drain_h) + 1):
            want = _shift_seats(s, seats_by_shift, (s.start_h + hour) % 24)
            for _ in range(want - on):
                seats.put(1)
            for _ in range(on - want):
                env.process(leave())
            on = want
            yield env.timeout(3600)

    def leave() -> Any:
        yield seats.get()  # a seat going off shift finishes its call first

    def seat_call() -> Any:
        arrived = env.now
        yield seats.get()
        waits["seat"].append(env.now - arrived)
        took = rng.expovariate(1 / seat_handle_s)
        busy_s[0] += took
        yield env.timeout(took)
        seats.put(1)

    def visit() -> Any:
        arrived = env.now
        district = districts[rng.randrange(len(districts))]
        with district.request() as req:
            yield req
            waits["visit"].append(env.now - arrived)
            yield env.timeout(rng.expovariate(1 / officer_busy_s))

    def arrivals(kind: str, rate_by_hour: list[float]) -> Any:
        for hour in range(math.ceil(s.day_h)):
            per_s = rate_by_hour[int(s.start_h + hour) % 24] / 3600
            end = min(hour + 1, s.day_h) * 3600  # a day may end inside an hour
            while per_s > 0:
                gap = rng.expovariate(per_s)
                if env.now + gap >= end:
                    break
                yield env.timeout(gap)
                env.process(seat_call() if kind == "seat" else visit())
            yield env.timeout(max(0.0, end - env.now))

    demand = work.demand
    env.process(shifts())
    env.process(arrivals("seat", [row["seat_calls"] for row in demand]))
    env.process(arrivals("visit", [row["visits"] for row in demand]))
    env.run(until=(s.day_h + s.drain_h) * 3600)
    # No calls at all: none waited (100%), as Erlang says for no traffic.
    seat_in = sum(w <= target["seat_wait_s"] for w in waits["seat"]) / len(waits["seat"]) if waits["seat"] else 1.0
    visit_in = sum(w <= target["visit_wait_s"] for w in waits["visit"]) / len(waits["visit"]) if waits["visit"] else 1.0
    seat_hours = sum(_shift_seats(s, seats_by_shift, h) * length_s for h, length_s in _day_hours(s))
    return {"seat_in_target_pct": round(100 * seat_in, 2), "visit_in_target_pct": round(100 * visit_in, 2),
            "seat_occupancy": round(busy_s[0] / max(1.0, seat_hours), 3), "seat_calls": len(waits["seat"]),
            "visits": len(waits["visit"])}


def plan_and_confirm(s: Scenario, *, work: Workload | None = None) -> Plan:
    plan = make_plan(s, work=work)
    plan.simulated = simulate_queues(s, seats_by_shift=plan.seats_by_shift,
                                     officers_per_district=plan.officers_per_district, work=work)
    return plan


def staffed(s: Scenario, plan: Plan) -> Scenario:
    """The scenario with its seats per shift and officers per district replaced by the plan's (for the live day)."""
    shifts = [shift.model_copy(update={"seats": plan.seats_by_shift.get(shift.name, shift.seats)})
              for shift in s.seats.shifts]
    return s.model_copy(update={
        "seats": s.seats.model_copy(update={"shifts": shifts}),
        "officers": s.officers.model_copy(update={"per_district": plan.officers_per_district})})


def live_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """What `shouhu plan --live` keeps of `shouhu simulate`'s figures."""
    return {name.removeprefix("sim_"): figures.get(name)
            for name in ("sim_high_in_time_pct", "sim_seat_occupancy", "sim_warnings_sent", "sim_high_tasks",
                         "sim_breaches", "sim_visits_requested")}


def describe(s: Scenario, plan: Plan, *, source: list[str] | None = None) -> str:
    """The plan in words: per shift, Erlang's seats against the scenario's; officers; the simulations' check.

    `source`: the lines that say where the demand came from (default: the scenario's volume)."""
    target = plan.target
    lines = source or [f"Scenario {s.name}: {s.warnings_per_day:,} warnings a day"
                       f"{' + bursts ' + ', '.join(f'{b.count:,}' for b in s.bursts) if s.bursts else ''},"
                       f" {s.districts} districts (full province volume)."]
    lines = [*lines,
             f"Target: {100 * target['high_in_time']:.0f}% of seat calls claimed within {target['seat_wait_s']:.0f} s"
             f" and of visits started within {target['visit_wait_s']:.0f} s, seat occupancy at most 85%.",
             f"Seat call: {plan.seat_handle_s:.0f} s (talk + wrap-up); visit: {plan.officer_busy_s:.0f} s"
             " (travel both ways + visit).", "",
             f"{'shift':<10}{'hours':>8}{'Erlang C':>10}{'scenario':>10}{'difference':>12}"]
    for shift in s.seats.shifts:
        need = plan.seats_by_shift[shift.name]
        lines.append(f"{shift.name:<10}{f'{shift.start_h:g}-{shift.end_h:g}':>8}{need:>10}{shift.seats:>10}"
                     f"{shift.seats - need:>+12}")
    lines.append(f"{'officers':<10}{'/district':>8}{plan.officers_per_district:>10}{s.officers.per_district:>10}"
                 f"{s.officers.per_district - plan.officers_per_district:>+12}")
    sim = plan.simulated
    if sim:
        lines += ["", "Confirmed by simulation (simpy: the hourly profile, the burst, shift changes), with the"
                      " Erlang staff:",
                  f"  seat calls claimed within target: Erlang {100 * plan.erlang_seat_sl:.2f}% at the peak hour,"
                  f" simulated {sim['seat_in_target_pct']:.2f}% over the day"
                  f" (difference {sim['seat_in_target_pct'] - 100 * plan.erlang_seat_sl:+.2f} points);"
                  f" seat occupancy {sim['seat_occupancy']:.2f}",
                  f"  visits started within target: Erlang {100 * plan.erlang_visit_sl:.2f}%, simulated"
                  f" {sim['visit_in_target_pct']:.2f}%"
                  f" (difference {sim['visit_in_target_pct'] - 100 * plan.erlang_visit_sl:+.2f} points)"]
        if sim["seat_in_target_pct"] < 100 * target["high_in_time"]:
            lines.append("  The simulation misses the target where Erlang meets it: the burst arrives faster than"
                         " any hourly average, so staff for the burst hour, not the mean.")
    if plan.live:
        lines += ["", *_live_table(plan)]
    else:
        lines += ["", "`shouhu plan --live` (or `shouhu simulate`) runs the same day against the real services"
                      " for the end-to-end figures."]
    return "\n".join(lines)


def _live_table(plan: Plan) -> list[str]:
    """Erlang, simpy and the live day (the real services) side by side, with the live day's differences."""
    sim, live = plan.simulated, plan.live
    erlang_high = plan.high_in_time_pct(plan.erlang_seat_sl, plan.erlang_visit_sl)
    sim_high = plan.high_in_time_pct(sim["seat_in_target_pct"] / 100, sim["visit_in_target_pct"] / 100) \
        if sim else None

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def diff(a: float | None, b: float | None, fmt: str) -> str:
        return "-" if a is None or b is None else format(a - b, "+" + fmt)

    rows = [("high tier in time (%)", erlang_high, sim_high, live.get("high_in_time_pct"), ".2f"),
            ("seat occupancy", plan.erlang_seat_occupancy, sim.get("seat_occupancy") if sim else None,
             live.get("seat_occupancy"), ".3f")]
    out = ["Confirmed by the live day (`shouhu simulate`: the real services on a fast clock, with the plan's staff):",
           f"{'':<24}{'Erlang C':>10}{'simpy':>10}{'live':>10}{'live-Erlang':>13}{'live-simpy':>12}"]
    for name, erlang, simulated, measured, fmt in rows:
        out.append(f"{name:<24}{cell(erlang, fmt):>10}{cell(simulated, fmt):>10}{cell(measured, fmt):>10}"
                   f"{diff(measured, erlang, fmt):>13}{diff(measured, simulated, fmt):>12}")
    out.append(f"  live day: {live.get('warnings_sent')} warnings sent, {live.get('high_tasks')} high-tier tasks,"
               f" {live.get('breaches')} breaches, {live.get('visits_requested')} visits requested."
               " Erlang's and simpy's high tier in time: a task is late only when its seat call or its visit"
               " waits past the target.")
    return out
