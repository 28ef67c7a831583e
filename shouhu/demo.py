"""`shouhu demo`: a realistic day of warnings, posted through the dispatcher's real API, on a fast clock.

What it makes happen (with the sandbox standing in for Telegram and Twilio):
- an opening burst at the first moment: high-tier cases whose citizens have a bound Telegram chat (the alert
  is delivered on the sandbox page), phones that never answer (the automated calls fail, an operator call is
  queued, a visit goes to the local unit, the supervisor is alerted at 75% of the deadline, then the deadline is
  breached), phones that answer and press 1 (acknowledged, closed) and phones that press 3 ("I have already
  transferred": an emergency with a payment-stop request);
- the rest of a day: a few hundred warnings across six Zhejiang districts, with the contract's fraud types and
  signals, ages weighted as the Zhejiang victims are (20-30 about half, 30-40 about a third, some elderly people
  and students), amounts at risk, and repeats about the same person that merge into one case.

Warnings go out in waves of ten clock minutes, so on a 300x clock (SHOUHU_TIME_SCALE) the day lasts under five
minutes; at scale 1 they all go at once, dated over the past day. Only the sandbox's phones and chats are
scripted; the demo never runs against real Telegram or Twilio (`shouhu up` starts it only with the sandbox).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from shared.clock import Clock

DAY_S = 24 * 3600
WAVE_S = 10 * 60  # clock seconds between posts: one batch per ten minutes of the demo day
DEFAULT_COUNT = 300

DISTRICTS = {  # code: (name, weight)
    "330102": ("杭州 上城区", 18), "330106": ("杭州 西湖区", 20), "330108": ("杭州 滨江区", 14),
    "330110": ("杭州 余杭区", 18), "330212": ("宁波 鄞州区", 16), "330302": ("温州 鹿城区", 14),
}
FRAUD_TYPES = {  # contract code: weight (the Zhejiang mix: brushing and investment lead)
    "task_brushing": 24, "fake_investment": 15, "fake_customer_service": 12, "pig_butchering": 9,
    "fake_loan": 9, "impersonating_police": 8, "impersonating_acquaintance": 6, "fake_credit_repair": 4,
    "game_trading": 5, "online_dating": 4, "predatory_loan": 4,
}
SIGNALS = {  # contract code: weight
    "fraud_sms_received": 26, "fraud_call_received": 20, "fraud_site_visited": 14, "fraud_app_installed": 10,
    "transfer_to_flagged_account": 10, "transfer_in_progress": 8, "remote_control_app": 6, "screen_sharing": 6,
}
SOURCES = {  # who sends what: a bank sees transfers, an operator sees calls and texts, a platform sees apps
    "bank-icbc-zj": ("transfer_in_progress", "transfer_to_flagged_account"),
    "bank-abc-zj": ("transfer_in_progress", "transfer_to_flagged_account"),
    "cmcc-zj": ("fraud_call_received", "fraud_sms_received"),
    "chinatelecom-zj": ("fraud_call_received", "fraud_sms_received"),
    "alipay-risk": ("remote_control_app", "screen_sharing", "fraud_app_installed", "fraud_site_visited"),
    "police-intel-zj": tuple(SIGNALS),
}
# Typical sums at risk (CNY), by fraud type: investment and romance scams take the most.
AMOUNT_MEDIAN = {"fake_investment": 60000, "pig_butchering": 80000, "impersonating_police": 50000,
                 "predatory_loan": 15000, "fake_loan": 8000, "task_brushing": 6000}
MOBILE_PREFIXES = ("135", "136", "137", "138", "139", "150", "151", "152", "158", "159", "182", "183", "187", "188")
GIVEN_NAMES = ("王芳", "李娜", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏", "徐涛", "孙悦")
# How the people called behave in the sandbox (behaviour, keys): most answer and press 1 (I understand),
# many never pick up, a few are busy or a voicemail, some listen and press nothing.
PHONE_BEHAVIOURS = {("answer", ("1",)): 44, ("no-answer", ()): 28, ("busy", ()): 8, ("machine", ()): 6,
                    ("answer", ("",)): 10, ("answer", ("3",)): 4}


@dataclass
class Planned:
    """One warning of the demo day: when it is posted (clock seconds after the start) and how its citizen behaves."""

    offset_s: float
    record: dict[str, Any]
    phone_script: tuple[str, tuple[str, ...]] | None = None  # (behaviour, keys) in the Twilio sandbox
    chat_name: str | None = None  # a Telegram chat bound to the phone in the sandbox, under this name
    showcase: str | None = None  # what this opening warning is there to show


@dataclass
class DemoReport:
    posted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    merged: int = 0
    chats_bound: list[int] = field(default_factory=list)  # the sandbox chat ids the bot confirmed
    phones_scripted: int = 0
    showcase_tasks: dict[str, list[str]] = field(default_factory=dict)  # what it shows -> task ids


def _pick(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _phone(rng: random.Random) -> str:
    return "+86" + rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _age(rng: random.Random) -> int:
    band = rng.choices(("20s", "30s", "elderly", "student", "middle"), weights=(50, 31, 8, 6, 5))[0]
    return {"20s": rng.randint(20, 29), "30s": rng.randint(30, 39), "elderly": rng.randint(65, 84),
            "student": rng.randint(16, 19), "middle": rng.randint(40, 64)}[band]


def _amount(rng: random.Random, fraud_type: str) -> int | None:
    if rng.random() < 0.2:
        return None  # the sender did not know
    median = AMOUNT_MEDIAN.get(fraud_type, 5000)
    return max(100, int(round(rng.lognormvariate(0, 0.9) * median, -2)))


def _record(rng: random.Random, run_id: str, n: int, *, phone: str, region: str, fraud_type: str,
            signal: str, **extra: Any) -> dict[str, Any]:
    senders = [s for s, signals in SOURCES.items() if signal in signals and s != "police-intel-zj"]
    source = rng.choice(senders) if senders and rng.random() < 0.85 else "police-intel-zj"
    record: dict[str, Any] = {
        "source": source, "source_ref": f"demo-{run_id}-{n:04d}", "phone": phone, "fraud_type": fraud_type,
        "signal": signal, "region_code": region, "amount_at_risk": _amount(rng, fraud_type),
        "subject": {"age": _age(rng), "gender": rng.choice(("female", "male"))},
        "details": {"demo": run_id},
    }
    if source.startswith(("bank", "alipay")):
        record["risk_score"] = rng.randint(40, 99)
    record.update(extra)
    return {k: v for k, v in record.items() if v is not None}


def plan_day(*, run_id: str, count: int = DEFAULT_COUNT, seed: int | None = None,
             day_s: float = DAY_S) -> list[Planned]:
    """The demo day (`day_s` clock seconds): an opening burst that shows every path, then `count` warnings in
    all (ordered by offset)."""
    rng = random.Random(seed if seed is not None else run_id)
    plans: list[Planned] = []
    n = 0

    def opening(show: str, *, script: tuple[str, tuple[str, ...]], chat: bool, signal: str, region: str) -> None:
        nonlocal n
        n += 1
        phone = _phone(rng)
        fraud_type = _pick(rng, FRAUD_TYPES)
        plans.append(Planned(0, _record(rng, run_id, n, phone=phone, region=region, fraud_type=fraud_type,
                                        signal=signal), script, rng.choice(GIVEN_NAMES) if chat else None, show))

    districts = list(DISTRICTS)
    # Nobody answers the phone and the Telegram alert goes unanswered: operator queue, visit, escalation, breach.
    for i in range(3):
        opening("unanswered_alert", script=("no-answer", ()), chat=True, signal="transfer_to_flagged_account",
                region=districts[i])
    for i in range(3):
        opening("unreachable", script=("no-answer", ()), chat=False, signal="remote_control_app",
                region=districts[3 + i])
    # "I have already transferred" (key 3): an emergency and a payment-stop request.
    for i in range(2):
        opening("emergency", script=("answer", ("3",)), chat=False, signal="transfer_in_progress",
                region=districts[i * 2])
    # Answered, key 1: acknowledged and closed at once.
    for i in range(3):
        opening("acknowledged", script=("answer", ("1",)), chat=False, signal="screen_sharing",
                region=districts[i + 1])

    regions: dict[str, str] = {}  # the day's own citizens (repeats are about them), by phone
    while len(plans) < count:
        n += 1
        # A third of the day's warnings come in its first two hours (a busy morning), the rest over the day.
        offset = rng.uniform(0, day_s / 12) if rng.random() < 0.33 else rng.uniform(0, day_s - WAVE_S)
        if len(regions) > 20 and rng.random() < 0.08:
            phone = rng.choice(list(regions))  # the same person again: the warning joins the open case
            plans.append(Planned(offset, _record(rng, run_id, n, phone=phone, region=regions[phone],
                                                 fraud_type=_pick(rng, FRAUD_TYPES), signal=_pick(rng, SIGNALS))))
            continue
        phone = _phone(rng)
        regions[phone] = _pick(rng, _district_weights())
        plans.append(Planned(
            offset, _record(rng, run_id, n, phone=phone, region=regions[phone],
                            fraud_type=_pick(rng, FRAUD_TYPES), signal=_pick(rng, SIGNALS)),
            _pick(rng, PHONE_BEHAVIOURS), rng.choice(GIVEN_NAMES) if rng.random() < 0.12 else None))
    plans.sort(key=lambda p: p.offset_s)
    return plans


def _district_weights() -> dict[str, float]:
    return {code: weight for code, (_, weight) in DISTRICTS.items()}


class Sandbox:
    """The sandbox's control API, as the demo plays the citizens."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def script_phone(self, phone: str, behaviour: str, keys: tuple[str, ...]) -> None:
        resp = await self.http.put(f"/sandbox/twilio/numbers/{phone}",
                                   json={"behaviour": behaviour, "digits": list(keys), "ring_s": 3})
        resp.raise_for_status()

    async def bind_chat(self, phone: str, name: str, *, wait_s: float) -> int | None:
        """A citizen starts the bot and shares their number, as on the sandbox page; the chat once the bot confirmed."""
        chat = (await self._ok("POST", "/chats", json={"phone": phone, "first_name": name}))["chat_id"]
        await self._ok("POST", f"/chats/{chat}/send", json={"text": "/start"})
        last = await self._bot_reply(chat, after=0, wait_s=wait_s)
        if last is None:
            return None
        await self._ok("POST", f"/chats/{chat}/contact", json={"phone_number": phone})
        return chat if await self._bot_reply(chat, after=last, wait_s=wait_s) is not None else None

    async def _bot_reply(self, chat: int, *, after: int, wait_s: float) -> int | None:
        """The id of the bot's newest message after `after`, waiting up to `wait_s` (the sandbox waits for us)."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            body = await self._ok("GET", f"/chats/{chat}/messages",
                                  params={"from": "bot", "after": after, "wait": min(left, 20)})
            if body["messages"]:
                return max(m["message_id"] for m in body["messages"])
        return None

    async def _ok(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self.http.request(method, "/sandbox/telegram" + path, **kwargs)
        resp.raise_for_status()
        return resp.json()


async def wait_ready(http: httpx.AsyncClient, url: str, *, timeout_s: float = 120) -> None:
    """Wait for a service to answer its health check (`shouhu up` starts the demo beside the services)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await http.get(url, timeout=5)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


async def run_demo(*, dispatcher_url: str, ingest_key: str, sandbox_url: str | None, clock: Clock,
                   count: int = DEFAULT_COUNT, at_once: bool | None = None, seed: int | None = None,
                   run_id: str | None = None, say: Callable[[str], None] = print,
                   bind_wait_s: float = 15.0, day_s: float = DAY_S) -> DemoReport:
    """Script the sandbox's citizens, then post the day's warnings through POST /v1/warnings/batch.

    `at_once`: post everything now, dated over the past day (default: when the clock is not fast).
    `day_s`: the length of the demo day in clock seconds (tests shorten it).
    """
    run_id = run_id or str(int(time.time()))
    plans = plan_day(run_id=run_id, count=count, seed=seed, day_s=day_s)
    at_once = clock.scale <= 1 if at_once is None else at_once
    report = DemoReport()
    headers = {"Authorization": f"Bearer {ingest_key}"}
    async with httpx.AsyncClient(base_url=dispatcher_url, headers=headers, timeout=60) as api:
        await wait_ready(api, "/readyz")
        sandbox = None
        if sandbox_url:
            sandbox = Sandbox(httpx.AsyncClient(base_url=sandbox_url, timeout=60))
            await wait_ready(sandbox.http, "/healthz")
        waves = _waves(plans, at_once=at_once)
        if not at_once and sandbox is not None:
            # The opening shows soonest: the warnings of citizens without a chat go first (their phones are
            # scripted at once), those whose Telegram chat must be bound first follow as soon as it is.
            first = waves[0][1]
            waves[0:1] = [(0.0, [p for p in first if not p.chat_name]), (0.0, [p for p in first if p.chat_name])]
        try:
            say(f"demo: posting {len(plans)} warnings " + ("now, dated over the past day" if at_once else
                f"over a day of the {clock.scale:g}x clock (about {day_s / clock.scale / 60:.0f} real minutes)")
                + (", its citizens played by the sandbox" if sandbox else ""))

            async def prepare(wave: list[Planned]) -> None:
                if sandbox is not None:
                    await _prepare_citizens(sandbox, wave, report, say=say, bind_wait_s=bind_wait_s)

            await _post_waves(api, waves, report, clock=clock, at_once=at_once, day_s=day_s, say=say,
                              prepare=prepare)
        finally:
            if sandbox is not None:
                await sandbox.http.aclose()
    say(f"demo: done: {report.posted} warnings, {report.merged} merged into open cases, tiers {dict(report.tiers)}")
    return report


async def _post_waves(api: httpx.AsyncClient, waves: list[tuple[float, list[Planned]]], report: DemoReport, *,
                      clock: Clock, at_once: bool, day_s: float, say: Callable[[str], None],
                      prepare: Callable[[list[Planned]], Awaitable[None]]) -> None:
    """Each wave at its time of the clock's day (all at once: now), through POST /v1/warnings/batch; its
    citizens are scripted in the sandbox just before (a wave's few phones and chats take well under its gap)."""
    start = clock.now()
    for number, (wave_at, wave) in enumerate(waves):
        if not wave:
            continue
        await prepare(wave)
        if not at_once:
            wait_s = clock.to_real_s((start + timedelta(seconds=wave_at) - clock.now()).total_seconds())
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        now = clock.now()
        records = [_dated(p, now=now, at_once=at_once, day_s=day_s) for p in wave]
        resp = await api.post("/v1/warnings/batch", json={"warnings": records})
        resp.raise_for_status()
        for plan, result in zip(wave, resp.json()["results"], strict=True):
            _count(report, plan, result)
        if number == 0:
            say(f"demo: {report.posted} warnings in ({dict(report.tiers)}); see the operator queue and the "
                "supervisor console")


async def _prepare_citizens(sandbox: Sandbox, plans: list[Planned], report: DemoReport, *,
                            say: Callable[[str], None], bind_wait_s: float) -> None:
    scripted = {p.record["phone"]: p.phone_script for p in plans if p.phone_script}
    chats = {p.record["phone"]: p.chat_name for p in plans if p.chat_name}
    if not scripted and not chats:
        return
    slots = asyncio.Semaphore(16)

    async def script(phone: str, how: tuple[str, tuple[str, ...]]) -> None:
        async with slots:
            await sandbox.script_phone(phone, *how)

    async def bind(phone: str, name: str) -> int | None:
        async with slots:
            return await sandbox.bind_chat(phone, name, wait_s=bind_wait_s)

    await asyncio.gather(*(script(phone, how) for phone, how in scripted.items()))
    report.phones_scripted += len(scripted)
    bound = await asyncio.gather(*(bind(phone, name) for phone, name in chats.items()))
    confirmed = [chat for chat in bound if chat is not None]
    report.chats_bound += confirmed
    if len(confirmed) < len(chats):
        say(f"demo: the bot confirmed {len(confirmed)} of {len(chats)} chats (is the bot running?)")


def _waves(plans: list[Planned], *, at_once: bool) -> list[tuple[float, list[Planned]]]:
    """Batches of warnings by ten-minute slot of the day (one batch of at most 1,000 when at once)."""
    if at_once:
        return [(0.0, plans[i:i + 1000]) for i in range(0, len(plans), 1000)]
    waves: dict[float, list[Planned]] = {}
    for plan in plans:
        waves.setdefault(plan.offset_s // WAVE_S * WAVE_S, []).append(plan)
    return sorted(waves.items())


def _dated(plan: Planned, *, now: datetime, at_once: bool, day_s: float) -> dict[str, Any]:
    """The record with its occurred_at: a few minutes before it is posted (or its time in the past day)."""
    rng = random.Random(plan.record["source_ref"])
    before = timedelta(minutes=rng.uniform(1, 25))
    when = now - before - (timedelta(seconds=day_s - plan.offset_s) if at_once and plan.offset_s else timedelta())
    return {**plan.record, "occurred_at": when.isoformat()}


def _count(report: DemoReport, plan: Planned, result: dict[str, Any]) -> None:
    report.posted += 1
    report.statuses[result.get("status", "?")] += 1
    if result.get("tier"):
        report.tiers[result["tier"]] += 1
    report.merged += bool(result.get("merged"))
    if plan.showcase and result.get("task_id"):
        report.showcase_tasks.setdefault(plan.showcase, []).append(result["task_id"])
