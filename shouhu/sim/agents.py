"""The simulated people (simpy processes), each acting only through the real interfaces.

- the senders: warnings in batches, `POST /v1/warnings/batch` (dispatcher);
- the citizens: their phones are scripted in the Twilio sandbox (answer or not, which key), and those with a
  Telegram chat read the alert in the Telegram sandbox and press a button (`/sandbox/telegram/...`);
- the 96110 seats: `PUT /v1/seat`, `POST /v1/queue/next`, `POST /v1/tasks/{id}/call`, `.../disposition`
  (callcenter). A seat claims only when the model says it is free, and a free seat with nothing to claim
  waits `claim_every_s` before asking again: one request per free-seat cycle, not 1,580 pollers;
- the officers: a duty desk lists the province's open visits (`GET /v1/visits`), a district officer claims one,
  travels, meets the citizen (or not) and reports (`/v1/visits/{id}/claim`, `/report`);
- a supervisor moves payment stops on (`/v1/emergencies/{task_id}/payment-stop`), and when a visit found
  nobody sends officers once more (`POST /v1/tasks/{id}/visits`), then closes the loop as unreachable
  (`POST /v1/tasks/{id}/feedback`).

simpy (4.1, maintained, the usual Python discrete-event library) keeps the people's time: their talk times,
journeys, shift changes and reading delays are simpy timeouts, on the services' clock (driver.py).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import simpy

from services.bot.alerts.service import callback_data
from services.dispatcher.policy.service import load_policy
from shared.clock import LOCAL_TZ
from shouhu.sim.driver import Driver, Process
from shouhu.sim.population import Citizen
from shouhu.sim.scenario import Scenario

BATCH_EVERY_S = 15.0      # simulated seconds between two batches from the senders
TELEGRAM_POLL_S = 20.0    # how often the citizens' phones look for new Telegram messages
EMERGENCY_POLL_S = 120.0  # how often the supervisor looks at emergencies
PAYMENT_STOP_S = 900.0    # a bank confirms a protective payment stop after this (mean)
SAMPLE_EVERY_S = 300.0    # queue depth and seats busy, every five simulated minutes
NO_ANSWER_RING_S = 60.0   # a seat lets an unanswered call ring this long


@dataclass
class Seat:
    key: str
    phone: str
    on_duty: bool = False


@dataclass
class World:
    """Everything the agents share: the scenario, the citizens, the HTTP clients and what was seen."""

    s: Scenario
    driver: Driver
    citizens: list[Citizen]
    dispatcher: httpx.AsyncClient
    callcenter: httpx.AsyncClient
    sandbox: httpx.AsyncClient
    keys: dict[str, Any]
    rng: random.Random
    by_task: dict[str, Citizen] = field(default_factory=dict)
    by_chat: dict[int, Citizen] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    seat_busy_s: float = 0.0
    seat_on_duty_s: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    free_seats: simpy.Store | None = None
    seats_on_duty: int = 0
    visits_taken: set[str] = field(default_factory=set)
    emergencies_seen: set[str] = field(default_factory=set)
    not_found: Counter[str] = field(default_factory=Counter)  # visits that found nobody, per task
    errors: Counter[str] = field(default_factory=Counter)
    claimers: int = 1

    @property
    def env(self) -> simpy.Environment:
        return self.driver.env

    def hour(self) -> int:
        """The local hour on the services' clock (answer rates and shifts follow it)."""
        return self.driver.at(self.env.now).astimezone(LOCAL_TZ).hour

    def request(self, client: httpx.AsyncClient, method: str, path: str, *, key: str | None = None,
                body: Any = None, headers: dict[str, str] | None = None) -> simpy.Event:
        """An HTTP request as a simpy event: its value is (status, json or None), or an exception."""
        head = dict(headers or {})
        if key:
            head["Authorization"] = f"Bearer {key}"

        # Safe to send again after a reset connection: reads, PUTs, and POSTs the server deduplicates (a warning's
        # source_ref, a visit report's Idempotency-Key). Claims and dispositions are not resent.
        again = method in ("GET", "PUT") or path == "/v1/warnings/batch" or "Idempotency-Key" in head

        async def go() -> tuple[int, Any]:
            content = orjson.dumps(body) if body is not None else None
            if content is not None:
                head["Content-Type"] = "application/json"
            for attempt in range(3 if again else 1):
                try:
                    r = await client.request(method, path, content=content, headers=head)
                    break
                except httpx.TransportError:
                    if attempt == (2 if again else 0):
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            try:
                data = r.json() if r.content else None
            except ValueError:
                data = None
            return r.status_code, data

        return self.driver.call(go)

    def ok(self, answer: Any, what: str, *expected: int) -> bool:
        """Whether the answer is one of the expected statuses; anything else is counted by what and status."""
        if isinstance(answer, BaseException):
            self.errors[f"{what}: {type(answer).__name__}"] += 1
            return False
        if answer[0] in expected:
            return True
        self.errors[f"{what}: HTTP {answer[0]}"] += 1
        return False


# ---- senders -----------------------------------------------------------------------------------------------


def warning_body(w: World, c: Citizen) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": c.source, "source_ref": f"sim-{w.s.seed}-{c.index}", "phone": c.phone, "fraud_type": c.fraud_type,
        "signal": c.signal, "region_code": c.region_code, "occurred_at": w.driver.at(w.env.now).isoformat(),
        "subject": {"age": c.age}}
    if c.tier_hint == "high":
        body["amount_at_risk"] = 1000 * (5 + c.index % 40)
    return body


def senders(w: World) -> Process:
    """The upstream systems: every warning due by now, in batches of up to 1,000."""
    pending = sorted(w.citizens, key=lambda c: c.at_s)
    i = 0
    while i < len(pending):
        batch = []
        while i < len(pending) and pending[i].at_s <= w.env.now and len(batch) < 1000:
            batch.append(pending[i])
            i += 1
        if batch:
            w.driver.process(send_batch(w, batch), "sender")
            yield w.env.timeout(BATCH_EVERY_S)
        elif i < len(pending):
            yield w.env.timeout(max(0.0, pending[i].at_s - w.env.now))


def send_batch(w: World, batch: list[Citizen]) -> Process:
    body = {"warnings": [warning_body(w, c) for c in batch]}
    for attempt in range(4):  # (source, source_ref) makes a retry safe: a replay answers `duplicate`
        answer = yield w.request(w.dispatcher, "POST", "/v1/warnings/batch", key=w.keys["ingest"], body=body)
        if w.ok(answer, "warnings batch", 200):
            for c, result in zip(batch, answer[1]["results"], strict=True):
                if result.get("status") in ("accepted", "duplicate") and result.get("task_id"):
                    c.task_id, c.tier = str(result["task_id"]), result.get("tier")
                    w.by_task[c.task_id] = c
                    w.counts["warnings_accepted"] += 1
                else:
                    w.errors[f"warning rejected: {str(result.get('errors'))[:120]}"] += 1
            return
        yield w.env.timeout(5.0 * (attempt + 1))
    w.counts["batches_failed"] += 1


# ---- citizens on Telegram ----------------------------------------------------------------------------------


def telegram_citizens(w: World) -> Process:
    """The citizens' Telegram apps: new alerts are read after each one's delay and answered with a button."""
    since: float | None = None
    seen: set[tuple[int, int]] = set()
    while True:
        path = "/sandbox/telegram/sends" + (f"?since={since}" if since is not None else "")
        answer = yield w.request(w.sandbox, "GET", path)
        if w.ok(answer, "telegram sends", 200):
            for at, chat_id, message_id in answer[1]["sends"]:
                since = max(since or 0.0, at - 0.001)
                if (chat_id, message_id) in seen:
                    continue
                seen.add((chat_id, message_id))
                c = w.by_chat.get(chat_id)
                if c is not None and c.presses_button and c.task_id:
                    w.counts["telegram_alerts_seen"] += 1
                    w.driver.process(press(w, c, message_id), "telegram citizen")
        yield w.env.timeout(TELEGRAM_POLL_S)


def press(w: World, c: Citizen, message_id: int) -> Process:
    yield w.env.timeout(c.read_after_s)
    assert c.task_id and c.chat_id is not None
    answer = yield w.request(w.sandbox, "POST", f"/sandbox/telegram/chats/{c.chat_id}/press",
                             body={"message_id": message_id, "data": callback_data(c.says, uuid.UUID(c.task_id))})
    if w.ok(answer, "telegram press", 200):
        w.counts["telegram_presses"] += 1


# ---- the 96110 seats ---------------------------------------------------------------------------------------


def seat_shifts(w: World, seats: list[Seat]) -> Process:
    """Seats come on and go off at the shifts' hours (a seat going off finishes its call first)."""
    assert w.free_seats is not None
    while True:
        want = min(len(seats), w.s.scaled(w.s.seats.on_duty(w.hour())))
        on = [s for s in seats if s.on_duty]
        for seat in [s for s in seats if not s.on_duty][:max(0, want - len(on))]:
            seat.on_duty = True
            w.seats_on_duty += 1
            w.driver.process(seat_on(w, seat), "seat on")
        for _ in range(max(0, len(on) - want)):
            w.driver.process(seat_off(w), "seat off")
        # wake again at the next whole hour
        yield w.env.timeout(3600 - w.env.now % 3600)


def seat_on(w: World, seat: Seat) -> Process:
    answer = yield w.request(w.callcenter, "PUT", "/v1/seat", key=seat.key,
                             body={"state": "available", "phone": seat.phone})
    if w.ok(answer, "seat available", 200):
        assert w.free_seats is not None
        yield w.free_seats.put(seat)


def seat_off(w: World) -> Process:
    assert w.free_seats is not None
    seat = yield w.free_seats.get()
    seat.on_duty = False
    w.seats_on_duty -= 1
    answer = yield w.request(w.callcenter, "PUT", "/v1/seat", key=seat.key, body={"state": "offline"})
    w.ok(answer, "seat offline", 200)


MAX_CLAIMERS = 8  # claims in flight at once while work is waiting (one when the queue is empty)


def seat_claims(w: World, *, lead: bool = True) -> Process:
    """Free seats ask for work one at a time; with nothing waiting, the next ask is `claim_every_s` later.

    One lead claimer polls while the queue is empty (one request per `claim_every_s`, not one per free seat);
    each claim that finds work starts another claimer, up to MAX_CLAIMERS, so that a backlog is taken as fast
    as the callcenter answers; a helper stops at the first empty answer.
    """
    assert w.free_seats is not None
    while True:
        seat = yield w.free_seats.get()
        if not seat.on_duty:
            continue
        answer = yield w.request(w.callcenter, "POST", "/v1/queue/next", key=seat.key)
        if isinstance(answer, tuple) and answer[0] in (200, 409):
            if answer[0] == 200:
                w.driver.process(seat_call(w, seat, answer[1]), "seat call")
            else:  # on a key-2 call, or in wrap-up: see what it holds
                w.driver.process(seat_recover(w, seat), "seat recover")
            if w.claimers < MAX_CLAIMERS:
                w.claimers += 1
                w.driver.process(seat_claims(w, lead=False), "claims")
            continue
        if not (isinstance(answer, tuple) and answer[0] == 204):
            w.ok(answer, "queue next", 200, 204)
        yield w.free_seats.put(seat)
        if not lead:
            w.claimers -= 1
            return
        yield w.env.timeout(w.s.seats.claim_every_s)


def _disposition_for(c: Citizen | None, answered: bool) -> str:
    if not answered:
        # Nobody picked up: `unreachable` keeps the task open and the dispatcher sends the district's officers.
        return "unreachable"
    if c is not None and c.says == "loss_reported":
        return "loss_reported"
    if c is not None and c.says == "not_me":
        return "wrong_number"
    return "dissuaded"


def seat_call(w: World, seat: Seat, task: dict[str, Any]) -> Process:
    """Claimed: script the citizen's phone for this call, click-to-call, talk, record the disposition, wrap up."""
    started = w.env.now
    w.counts["seat_claims"] += 1
    task_id = str(task["task_id"])
    c = w.by_task.get(task_id)
    answered = w.rng.random() < w.s.answering.operator_call_by_hour[w.hour()]
    talk_s = w.rng.expovariate(1 / w.s.seats.handle_s)
    script = ({"behaviour": "answer", "ring_s": w.s.answering.ring_s, "digits": [], "hangup_after_s": talk_s}
              if answered else {"behaviour": "no-answer"})
    answer = yield w.request(w.sandbox, "PUT", f"/sandbox/twilio/numbers/{task['phone']}", body=script)
    w.ok(answer, "script citizen phone", 200)
    answer = yield w.request(w.callcenter, "POST", f"/v1/tasks/{task_id}/call", key=seat.key)
    if w.ok(answer, "click-to-call", 200):
        w.counts["seat_calls_placed"] += 1
    yield w.env.timeout(w.s.answering.ring_s + talk_s if answered else NO_ANSWER_RING_S)
    yield from dispose(w, seat, task_id, _disposition_for(c, answered))
    w.counts["seat_reached" if answered else "seat_not_reached"] += 1
    yield w.env.timeout(w.rng.expovariate(1 / w.s.seats.wrap_up_s) if w.s.seats.wrap_up_s else 0)
    w.seat_busy_s += w.env.now - started
    assert w.free_seats is not None
    yield w.free_seats.put(seat)


def dispose(w: World, seat: Seat, task_id: str, disposition: str) -> Process:
    body: dict[str, Any] = {"disposition": disposition, "note": "模拟坐席 (simulated seat)"}
    if disposition == "callback":
        body["callback_at"] = w.driver.at(w.env.now + 900).isoformat()
    answer = yield w.request(w.callcenter, "POST", f"/v1/tasks/{task_id}/disposition", key=seat.key, body=body)
    if isinstance(answer, tuple) and answer[0] == 409 and disposition in ("dissuaded", "callback"):
        # an emergency (money already sent) is never closed as dissuaded: the seat records the loss
        answer = yield w.request(w.callcenter, "POST", f"/v1/tasks/{task_id}/disposition", key=seat.key,
                                 body={"disposition": "loss_reported", "note": "模拟坐席: 已转账"})
    if w.ok(answer, "disposition", 202):
        w.counts[f"disposition_{disposition}"] += 1


def seat_recover(w: World, seat: Seat) -> Process:
    """A seat that was put through to a citizen (key 2) holds that task: talk, dispose, become available."""
    started = w.env.now
    answer = yield w.request(w.callcenter, "GET", "/v1/tasks?mine=true", key=seat.key)
    if w.ok(answer, "my tasks", 200):
        for item in answer[1]["items"]:
            w.counts["seat_transfers" if item.get("live_call") else "seat_held_tasks"] += 1
            yield w.env.timeout(w.rng.expovariate(1 / w.s.seats.handle_s))
            yield from dispose(w, seat, item["task_id"], _disposition_for(w.by_task.get(item["task_id"]), True))
    answer = yield w.request(w.callcenter, "PUT", "/v1/seat", key=seat.key, body={"state": "available"})
    w.ok(answer, "seat available", 200)
    w.seat_busy_s += w.env.now - started
    assert w.free_seats is not None
    yield w.free_seats.put(seat)


# ---- officers ----------------------------------------------------------------------------------------------


def duty_desk(w: World, officers: dict[str, simpy.Store]) -> Process:
    """The province's duty desk sees every open visit and hands it to an officer of the district."""
    while True:
        answer = yield w.request(w.dispatcher, "GET", "/v1/visits?limit=500", key=w.keys["officer_desk"])
        if w.ok(answer, "list visits", 200):
            for v in answer[1]["items"]:
                if v["status"] == "open" and v["visit_id"] not in w.visits_taken:
                    w.visits_taken.add(v["visit_id"])
                    w.counts["visits_seen"] += 1
                    if v["region_code"] in officers:
                        w.driver.process(officer_visit(w, officers, v), "officer")
        yield w.env.timeout(w.s.officers.poll_every_s)


# How long a visit may wait for an officer before the dispatcher sends it to a supervisor, by tier: the policy the
# services run (the default one; the run does not pass SHOUHU_POLICY on).
CLAIM_WITHIN_S = {tier: (book.visit_claim_within_minutes or 0) * 60
                  for tier, book in load_policy(None).doc.playbooks.items()}


def officer_visit(w: World, officers: dict[str, simpy.Store], visit: dict[str, Any]) -> Process:
    """An officer of the district takes the visit when one is free. If none is by the time the dispatcher
    escalates it, the duty supervisor hands the task to a district of the same city with an officer free (the
    visit moves with it) and that officer goes; with none free anywhere near, it keeps waiting at home."""
    region = visit["region_code"]
    store = officers[region]
    waiting = store.get()
    window_s = CLAIM_WITHIN_S.get(visit.get("tier") or "", 0)
    if window_s:
        yield waiting | w.env.timeout(window_s)
    if not waiting.triggered:
        free = next((r for r, s in officers.items() if r != region and r[:4] == region[:4] and s.items), None)
        if free is not None:
            answer = yield w.request(w.dispatcher, "POST", f"/v1/tasks/{visit['task_id']}/reassign",
                                     key=w.keys["supervisor"], body={"to": "unit", "unit": free,
                                                                     "note": "模拟督导：本辖区无警力，转邻近辖区"})
            if w.ok(answer, "hand visit over", 200):
                w.counts["supervisor_visits_handed_over"] += 1
                if waiting.triggered:  # a home officer came free meanwhile, but the visit is the neighbour's now
                    yield store.put(waiting.value)
                else:
                    waiting.cancel()
                store, waiting = officers[free], officers[free].get()
    key = yield waiting
    try:
        answer = yield w.request(w.dispatcher, "POST", f"/v1/visits/{visit['visit_id']}/claim", key=key)
        if not w.ok(answer, "visit claim", 200):
            return
        w.counts["visits_claimed"] += 1
        yield w.env.timeout(w.rng.expovariate(1 / w.s.officers.travel_s))
        found = w.rng.random() < w.s.officers.found_share
        c = w.by_task.get(str(visit["task_id"]))
        if found:
            yield w.env.timeout(w.rng.expovariate(1 / w.s.officers.visit_s))
            outcome = "loss_reported" if visit.get("emergency") or (c and c.says == "loss_reported") else "dissuaded"
        else:
            yield w.env.timeout(300)
            outcome = "not_found"
        body: dict[str, Any] = {"outcome": outcome, "note": "模拟民警 (simulated officer)"}
        if found:
            body["met_at"] = w.driver.at(w.env.now).isoformat()
        answer = yield w.request(w.dispatcher, "POST", f"/v1/visits/{visit['visit_id']}/report", key=key, body=body,
                                 headers={"Idempotency-Key": f"sim-{visit['visit_id']}"})
        if isinstance(answer, tuple) and answer[0] == 409 and outcome == "dissuaded":
            body["outcome"] = "loss_reported"
            answer = yield w.request(w.dispatcher, "POST", f"/v1/visits/{visit['visit_id']}/report", key=key,
                                     body=body, headers={"Idempotency-Key": f"sim2-{visit['visit_id']}"})
        if w.ok(answer, "visit report", 200):
            w.counts[f"visits_{outcome}"] += 1
            if outcome == "not_found":
                # The dispatcher escalates it to the supervisors' queue; the duty supervisor takes it from there.
                w.driver.process(nobody_found(w, str(visit["task_id"])), "supervisor")
        yield w.env.timeout(w.rng.expovariate(1 / w.s.officers.travel_s))  # back to the station
    finally:
        yield store.put(key)


# ---- the supervisor: payment stops -------------------------------------------------------------------------


def supervisor(w: World) -> Process:
    while True:
        answer = yield w.request(w.dispatcher, "GET", "/v1/emergencies", key=w.keys["supervisor"])
        if w.ok(answer, "emergencies", 200):
            for e in answer[1].get("items", []):
                task_id = str(e["task_id"])
                if task_id not in w.emergencies_seen and e["payment_stop"]["status"] == "requested":
                    w.emergencies_seen.add(task_id)
                    w.driver.process(payment_stop(w, task_id), "payment stop")
        yield w.env.timeout(EMERGENCY_POLL_S)


def nobody_found(w: World, task_id: str) -> Process:
    """Phone and visit both failed to reach the citizen: the duty supervisor (who looks at the escalations every
    few minutes) sends officers once more, and after a second empty visit closes the loop as `unreachable`."""
    yield w.env.timeout(w.rng.uniform(0, EMERGENCY_POLL_S))
    w.not_found[task_id] += 1
    if w.not_found[task_id] == 1:
        answer = yield w.request(w.dispatcher, "POST", f"/v1/tasks/{task_id}/visits", key=w.keys["supervisor"],
                                 body={"note": "模拟督导: 再次上门 (simulated supervisor: visit again)"})
        if w.ok(answer, "second visit", 200, 201, 409):
            w.counts["supervisor_second_visits"] += 1
        return
    answer = yield w.request(w.dispatcher, "POST", f"/v1/tasks/{task_id}/feedback", key=w.keys["supervisor"],
                             body={"outcome": "unreachable", "note": "模拟督导: 两次上门未找到本人"})
    if w.ok(answer, "close unreachable", 200, 409):
        w.counts["supervisor_closed_unreachable"] += 1


def payment_stop(w: World, task_id: str) -> Process:
    path = f"/v1/emergencies/{task_id}/payment-stop"
    answer = yield w.request(w.dispatcher, "POST", path, key=w.keys["supervisor"],
                             body={"status": "sent", "note": "模拟: 已发银行"})
    if not w.ok(answer, "payment stop sent", 200):
        return
    yield w.env.timeout(w.rng.expovariate(1 / PAYMENT_STOP_S))
    if w.rng.random() < 0.8:
        body = {"status": "confirmed", "amount_stopped": "20000.00", "reference": f"SIM-{task_id[:8]}"}
    else:
        body = {"status": "failed", "note": "模拟: 资金已转出"}
    answer = yield w.request(w.dispatcher, "POST", path, key=w.keys["supervisor"], body=body)
    if w.ok(answer, "payment stop end", 200):
        w.counts[f"payment_stops_{body['status']}"] += 1


# ---- the observer ------------------------------------------------------------------------------------------


def sampler(w: World, queued_operator_calls: Any, progress: Any = None) -> Process:
    """Every five simulated minutes: operator calls waiting for a seat (database), seats on duty and busy."""
    while True:
        if progress is not None and w.env.now % 3600 < SAMPLE_EVERY_S:
            progress(f"  {w.driver.at(w.env.now).astimezone(LOCAL_TZ):%H:%M} sent {w.counts['warnings_accepted']:,},"
                     f" seats busy {w.seats_on_duty - len(w.free_seats.items) if w.free_seats else 0}"
                     f"/{w.seats_on_duty}, claims {w.counts['seat_claims']:,}, visits {w.counts['visits_claimed']:,}")
        waiting = yield w.driver.call(lambda: queued_operator_calls(w.driver.service_now()))
        free = len(w.free_seats.items) if w.free_seats is not None else 0
        w.samples.append({"t_s": round(w.env.now), "hour": round(w.s.start_h + w.env.now / 3600, 3),
                          "queued_operator_calls": waiting if isinstance(waiting, int) else None,
                          "seats_on_duty": w.seats_on_duty, "seats_busy": max(0, w.seats_on_duty - free)})
        w.seat_on_duty_s += w.seats_on_duty * SAMPLE_EVERY_S
        yield w.env.timeout(SAMPLE_EVERY_S)
