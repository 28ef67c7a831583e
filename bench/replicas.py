"""`shouhu bench replicas`: do two replicas of each service keep the providers' limits between them, and do
high-tier alerts still go first while a province-wide campaign sends?

The set-up (bench/cluster.py, as ``shouhu bench faults`` has it): a private PostgreSQL, the sandbox, and two
replicas of each service (dispatcher, bot, callcenter), each its own process, the bots and the callcenters each
behind one address (a round-robin proxy; the bots take updates by webhook). The services run with their default
settings except SHOUHU_DB_POOL_SIZE=5 and SHOUHU_CALLS_PER_S (2; the allowed rate, printed), which every
callcenter is given, as an operator would give it to every replica. The sandbox's own limits are off (Telegram:
0 messages/s per bot and per chat; Twilio: 0 calls/s), so an excess is accepted and recorded instead of being
refused with a 429 and retried out of sight: what the sandbox received is what the replicas together did.

The load, all at once, for a fixed window (90 s; 45 s with --quick) that starts once the campaign's first
message is seen at the sandbox:

- a campaign to 100,000 bound chats (20,000 with --quick), created through the dispatcher's campaign API
  (POST /v1/campaigns, a supervisor key of unit 33, segment region 330106). Its recipients are the bound,
  active chats whose citizen's latest warning lies in the region: the chats are made in the sandbox in one
  request (POST /sandbox/telegram/chats/bulk), bound as the bot binds them, and each phone given a closed case,
  task and warning in region 330106, in bulk SQL. At Telegram's 30/s it would take about an hour: it is
  cancelled (POST /v1/campaigns/{id}/cancel) when the window ends.
- high-tier warnings (signal ``transfer_in_progress``), one a second through POST /v1/warnings, each for a new
  phone with a bound chat that is not among the campaign's recipients (so the alert never waits for its chat's
  1 s turn behind a campaign message): the warnings sent during the run are in district 330102, outside the
  campaign's segment.
- calls: at the window's start, high-tier warnings for phones without a chat, as many as the allowed rate
  dials in 1.5 windows (POST /v1/warnings/batch), so that both callcenters have calls waiting throughout
  (the high tier calls at any hour; the medium tier's call window may be closed). Called numbers do not
  answer (the sandbox's phone time runs 20x faster), to keep the machine's two cores for what is measured.

The figures:

- ``faults_max_telegram_rate``: the most messages the Telegram sandbox accepted in any sliding 1 s window,
  from its own arrival log (GET /sandbox/telegram/sends), from the campaign's start to the end of the window
  plus the alerts' grace. Telegram allows 30 per bot (both replicas use one token). Target <= 30.
- ``faults_max_cps``: the most calls created at the Twilio sandbox in any sliding 1 s window (its call log's
  ``created_at``), over the same span; ``faults_allowed_cps`` is SHOUHU_CALLS_PER_S. Target <= the allowed rate.
- ``faults_high_alert_delay_p99_ms`` / ``faults_high_alert_delay_max_ms``: from the moment the ingest answer
  (201) arrived to the alert's arrival at the Telegram sandbox (its ``sent_at``, same machine and clock; an
  alert that arrives before the answer counts as 0). Alerts not arrived 30 s after the window count as the
  time waited (a lower bound; how many is printed). Target p99 < 2,000.
- ``faults_high_alert_delay_idle_p99_ms``: the baseline, measured the same way in the same run: 10 such
  alerts, one a second, before the campaign is created, with nothing else running.
- ``faults_campaign_sent_in_window``: campaign messages the sandbox accepted during the window (the campaign
  really ran), and ``faults_alerts_sent_in_window`` beside it.

Nothing is asserted. The sandbox's own peaks (kept on monotonic time), per-chat violations, the campaign's
delivery report, the load average and the replica set are printed. Every process started here is stopped and
the private PostgreSQL deleted, even when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.cluster import (
    TG,
    TW,
    BenchDb,
    ClusterError,
    PrivatePostgres,
    ReplicaSet,
    bind_chats,
    load_average_note,
    make_keys,
    migrated,
)
from bench.ingest import CST, _Http, _percentile, _Report, _verbatim, machine_idle_note

REGION = "330106"  # the campaign's segment
# The warnings sent during the run: same unit, another district, so their chats never join the campaign.
LOAD_REGION = "330102"
ALLOWED_CPS = 2
TELEGRAM_PER_S = 30  # Telegram's limit per bot, for the notes
ALERT_EVERY_S = 1.0
ALERT_GRACE_S = 30.0  # after the window, how long alerts not yet arrived are waited for
BASELINE_ALERTS = 10  # sent first, with nothing else running: the same delay, unloaded
CAMPAIGN_START_TIMEOUT_S = 180.0
PHONE_TIME_SCALE = 0.05


@dataclass(frozen=True)
class _Plan:
    campaign_chats: int
    window_s: float

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        return cls(campaign_chats=20_000, window_s=45) if quick else cls(campaign_chats=100_000, window_s=90)

    @property
    def alerts(self) -> int:
        return int(self.window_s / ALERT_EVERY_S)

    @property
    def calls(self) -> int:
        return int(ALLOWED_CPS * self.window_s * 1.5)


def _phone(kind: int, n: int) -> str:
    # Mainland mobile numbers (CN, so dialled automatically): 135 campaign, 136 alerts, 137 calls only.
    return f"+86{kind}{n:08d}"


def _warning(ref: str, phone: str) -> dict[str, Any]:
    occurred = (datetime.now(UTC) - timedelta(seconds=30)).astimezone(CST).replace(microsecond=0)
    return {"source": "replicas", "source_ref": ref, "phone": phone, "fraud_type": "fake_investment",
            "signal": "transfer_in_progress", "region_code": LOAD_REGION, "occurred_at": occurred.isoformat()}


def max_in_any_second(times: list[float]) -> int:
    """The most events within any sliding second [t, t + 1) (times in seconds, any order)."""
    ordered = sorted(times)
    best = first = 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


# ---- set-up ----------------------------------------------------------------------------------------------------

# One closed case, task and warning per campaign phone, in region 330106 (their latest warning places them):
# what ingest would have left behind, written in three statements. $1 count, $2 policy version.
_SEED = (
    "INSERT INTO cases (id, phone, status, tier, region_code, warning_count, first_warning_at, last_warning_at,"
    " created_at, closed_at)"
    " SELECT md5('c' || i)::uuid, '+86135' || lpad(i::text, 8, '0'), 'closed', 'low', '330106', 1,"
    " now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', now() - interval '1 day'"
    " FROM generate_series(0, $1::int - 1) AS i",
    "INSERT INTO tasks (id, case_id, phone, region_code, fraud_type, tier, status, outcome, policy_version,"
    " created_at, plan_started_at, due_at, closed_at, closed_by)"
    " SELECT md5('t' || i)::uuid, md5('c' || i)::uuid, '+86135' || lpad(i::text, 8, '0'), '330106',"
    " 'fake_investment', 'low', 'closed', 'acknowledged', $2::text, now() - interval '2 days',"
    " now() - interval '2 days', now() - interval '1 day', now() - interval '1 day', 'citizen:bot_alert'"
    " FROM generate_series(0, $1::int - 1) AS i",
    "INSERT INTO warnings (id, source, source_ref, received_at, occurred_at, phone, fraud_type, signal, region_code,"
    " case_id, task_id, tier, due_at, reasons, merged, ingested_by, ingest_unit)"
    " SELECT md5('w' || i)::uuid, 'replicas-seed', 'seed-' || i, now() - interval '2 days',"
    " now() - interval '2 days', '+86135' || lpad(i::text, 8, '0'), 'fake_investment', 'fraud_sms_received',"
    " '330106', md5('c' || i)::uuid, md5('t' || i)::uuid, 'low', now() - interval '1 day', '[]'::jsonb, false,"
    " 'bench', '' FROM generate_series(0, $1::int - 1) AS i",
)


async def _bulk_chats(control: _Http, phones: list[str]) -> list[int]:
    status, data = await control.request("POST", f"{TG}/chats/bulk", orjson.dumps({"phones": phones}))
    if status != 200:
        raise ClusterError(f"the sandbox refused the chats: {_verbatim(status, data)}")
    return [int(c) for c in orjson.loads(data)["chat_ids"]]


async def _seed_campaign(db: BenchDb, control: _Http, count: int) -> list[int]:
    """`count` bound chats in region 330106 (the campaign's recipients)."""
    phones = [_phone(135, i) for i in range(count)]
    chat_ids = await _bulk_chats(control, phones)
    await bind_chats(db, chat_ids, phones)
    [row] = await db.fetch("SELECT id FROM policy_versions ORDER BY id DESC LIMIT 1")
    for statement in _SEED:
        await db.fetch(statement, *((count, row["id"]) if "$2" in statement else (count,)))
    await db.fetch("ANALYZE")  # the segment query plans on fresh statistics, as it would on a live database
    return chat_ids


# ---- load ------------------------------------------------------------------------------------------------------


@dataclass
class _Alerts:
    acked: dict[int, tuple[float, float]] = field(default_factory=dict)  # chat_id -> (sent, answered) unix times
    failed: list[str] = field(default_factory=list)


async def _alerts(ports: list[int], key: str, chats: list[tuple[int, str]], alerts: _Alerts, stop: asyncio.Event,
                  tag: str) -> None:
    """One high-tier warning a second (alternating replicas), each for a new phone with a bound chat."""
    https = [_Http(p, key) for p in ports]
    t0 = time.perf_counter()
    try:
        for n, (chat_id, phone) in enumerate(chats):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, t0 + n * ALERT_EVERY_S - time.perf_counter()))
            if stop.is_set():
                return
            http = https[n % len(https)]
            sent = time.time()
            try:
                status, data = await asyncio.wait_for(
                    http.request("POST", "/v1/warnings", orjson.dumps(_warning(f"alert-{tag}-{n}", phone))), 20)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                http.close()
                alerts.failed.append(repr(exc))
                continue
            if status in (200, 201):
                alerts.acked[chat_id] = (sent, time.time())
            else:
                alerts.failed.append(_verbatim(status, data)[:200])
    finally:
        for http in https:
            http.close()


async def _call_burst(port: int, key: str, count: int, tag: str) -> None:
    """`count` high-tier warnings for phones without a chat, in batches of 500."""
    http = _Http(port, key)
    try:
        for first in range(0, count, 500):
            records = [_warning(f"call-{tag}-{n}", _phone(137, n)) for n in range(first, min(count, first + 500))]
            status, data = await http.request("POST", "/v1/warnings/batch", orjson.dumps({"warnings": records}))
            if status != 200:
                raise ClusterError(f"the dispatcher refused the call load: {_verbatim(status, data)}")
    finally:
        http.close()


async def _arrivals(control: _Http, alerts: _Alerts, since: float, grace_s: float) -> dict[int, float]:
    """When each acknowledged alert reached the sandbox (its chat's first message), waiting up to `grace_s`."""
    deadline = time.perf_counter() + grace_s
    arrived: dict[int, float] = {}
    while True:
        for t, chat in await _sends(control, since):
            if chat in alerts.acked and chat not in arrived:
                arrived[chat] = t
        if len(arrived) == len(alerts.acked) or time.perf_counter() > deadline:
            return arrived
        await asyncio.sleep(0.5)


def _delays(alerts: _Alerts, arrived: dict[int, float], until: float) -> list[float]:
    """ms from each ingest answer to its alert's arrival (0 if it came first); not arrived: until `until`."""
    return [max(0.0, arrived.get(chat, until) - answered) * 1000 for chat, (_, answered) in alerts.acked.items()]


async def _sends(control: _Http, since: float) -> list[tuple[float, int]]:
    status, data = await control.request("GET", f"{TG}/sends?since={since:.3f}")
    if status != 200:
        raise ClusterError(f"the sandbox's send log: {_verbatim(status, data)}")
    return [(float(s[0]), int(s[1])) for s in orjson.loads(data)["sends"]]


async def _calls_created(control: _Http, since: float) -> list[float]:
    status, data = await control.request("GET", f"{TW}/calls?since={since:.3f}")
    if status != 200:
        raise ClusterError(f"the sandbox's call log: {_verbatim(status, data)}")
    return [float(c["created_at"]) for c in orjson.loads(data)["calls"] if c["direction"] == "outbound-api"]


async def _wait_first_send(control: _Http, chats: set[int], since: float) -> float:
    """When the campaign's first message reached the sandbox (its recipients are picked and chunked first)."""
    deadline = time.perf_counter() + CAMPAIGN_START_TIMEOUT_S
    while time.perf_counter() < deadline:
        found = [t for t, chat in await _sends(control, since) if chat in chats]
        if found:
            return min(found)
        await asyncio.sleep(0.25)
    raise ClusterError(f"the campaign sent nothing within {CAMPAIGN_START_TIMEOUT_S:.0f} s")


# ---- the benchmark ---------------------------------------------------------------------------------------------


async def bench_replicas(quick: bool) -> dict[str, float]:
    """Two replicas of each service: the providers' limits kept between them, alerts ahead of a campaign."""
    import secrets

    plan = _Plan.of(quick)
    report = _Report()
    report.notes.append(await machine_idle_note())
    report.notes.append(load_average_note("at the start"))
    pg = PrivatePostgres()
    cluster: ReplicaSet | None = None
    db = BenchDb(pg.url)
    control: _Http | None = None
    stop = asyncio.Event()
    load: list[asyncio.Task[Any]] = []
    failed = True
    try:
        t_setup = time.perf_counter()
        await asyncio.to_thread(pg.start)
        audit_key, service_password = await migrated(pg)
        ingest_key, supervisor_key = await make_keys(pg.url, audit_key, [("ingest", "", "replicas-ingest"),
                                                                           ("supervisor", "33", "replicas-campaign")])
        cluster = ReplicaSet(pg, audit_key=audit_key, service_password=service_password,
                             env={"SHOUHU_DB_POOL_SIZE": "5", "SHOUHU_CALLS_PER_S": str(ALLOWED_CPS)})
        # The sandbox's limits off: it records an excess rather than refusing it (and hiding it behind retries).
        await cluster.start_sandbox([
            (f"{TW}/settings", {"time_scale": PHONE_TIME_SCALE, "default_behaviour": "no-answer"}),
            (f"{TW}/limits", {"calls_per_s": 0}),
            (f"{TG}/limits", {"global_per_s": 0, "per_chat_per_s": 0})])
        control = _Http(cluster.sandbox_port)
        await cluster.start_services()  # the dispatcher registers its policy version, which the seed's tasks name
        t_seed = time.perf_counter()
        campaign_chats = await _seed_campaign(db, control, plan.campaign_chats)
        alert_phones = [_phone(136, n) for n in range(BASELINE_ALERTS + plan.alerts)]
        alert_chats = await _bulk_chats(control, alert_phones)
        await bind_chats(db, alert_chats, alert_phones)
        report.notes.append(
            f"set-up {time.perf_counter() - t_setup:.1f} s (seeding {plan.campaign_chats} campaign chats"
            f" {time.perf_counter() - t_seed:.1f} s): private PostgreSQL :{pg.port}, {cluster.describe()}")

        tag = secrets.token_hex(3)
        dispatchers = cluster.ports("dispatcher")
        alert_pairs = list(zip(alert_chats, alert_phones, strict=True))

        # -- the baseline: the same alerts, one a second, with nothing else running --
        idle = _Alerts()
        idle_started = time.time()
        await _alerts(dispatchers, ingest_key, alert_pairs[:BASELINE_ALERTS], idle, asyncio.Event(), f"{tag}-idle")
        idle_arrived = await _arrivals(control, idle, idle_started, ALERT_GRACE_S)
        idle_delays = _delays(idle, idle_arrived, time.time())

        # -- the campaign, then the window --
        started = time.time()
        admin = _Http(dispatchers[0], supervisor_key)
        try:
            body = {"name": f"replica bench {tag}", "segment": {"region_prefix": REGION},
                    "text": "警惕冒充客服退款诈骗：任何要求转账到“安全账户”的都是诈骗。", "lang": "zh"}
            status, data = await admin.request("POST", "/v1/campaigns", orjson.dumps(body))
            if status != 201:
                raise ClusterError(f"the campaign was refused: {_verbatim(status, data)}")
            campaign = orjson.loads(data)
        finally:
            admin.close()
        campaign_set = set(campaign_chats)
        first_send = await _wait_first_send(control, campaign_set, started)
        report.notes.append(f"campaign {campaign['campaign_id']}: {campaign['preview_count']} recipients at"
                            f" creation; first message {first_send - started:.1f} s after it was created")
        window_start = time.time()  # the alerts and calls start now, with the campaign sending
        alerts = _Alerts()
        load = [asyncio.create_task(_alerts(dispatchers, ingest_key, alert_pairs[BASELINE_ALERTS:], alerts, stop,
                                            tag)),
                asyncio.create_task(_call_burst(dispatchers[1], ingest_key, plan.calls, tag))]
        await asyncio.sleep(max(0.0, window_start + plan.window_s - time.time()))
        window_end = time.time()
        window_s = window_end - window_start
        stop.set()
        await asyncio.wait_for(asyncio.gather(*load), 60)

        admin = _Http(dispatchers[0], supervisor_key)
        try:
            status, data = await admin.request("POST", f"/v1/campaigns/{campaign['campaign_id']}/cancel")
            if status != 200:
                report.notes.append(f"cancelling the campaign: {_verbatim(status, data)}")
        finally:
            admin.close()
        arrived = await _arrivals(control, alerts, started, ALERT_GRACE_S)  # those still on their way, bounded
        counted_until = time.time()

        # -- counting --
        sends = await _sends(control, started)
        calls = await _calls_created(control, started)
        tg_stats = orjson.loads((await control.request("GET", f"{TG}/stats"))[1])
        tw_stats = orjson.loads((await control.request("GET", f"{TW}/stats"))[1])
        admin = _Http(dispatchers[0], supervisor_key)
        try:
            status, data = await admin.request("GET", f"/v1/campaigns/{campaign['campaign_id']}")
            campaign_now = orjson.loads(data) if status == 200 else {"status": f"unread ({status})", "report": {}}
        finally:
            admin.close()

        delays = _delays(alerts, arrived, counted_until)
        from_send = [max(0.0, arrived[chat] - sent) * 1000 for chat, (sent, _) in alerts.acked.items()
                     if chat in arrived]
        missing = len(alerts.acked) - sum(1 for chat in alerts.acked if chat in arrived)
        in_window = [(t, chat) for t, chat in sends if window_start <= t <= window_end]
        figures = {
            "faults_max_telegram_rate": float(max_in_any_second([t for t, _ in sends])),
            "faults_max_cps": float(max_in_any_second(calls)),
            "faults_allowed_cps": float(ALLOWED_CPS),
            "faults_high_alert_delay_p99_ms": round(_percentile(delays, 99), 1) if delays else -1.0,
            "faults_high_alert_delay_max_ms": round(max(delays), 1) if delays else -1.0,
            "faults_high_alert_delay_idle_p99_ms": round(_percentile(idle_delays, 99), 1) if idle_delays else -1.0,
            "faults_campaign_sent_in_window": float(sum(1 for _, chat in in_window if chat in campaign_set)),
            "faults_alerts_sent_in_window": float(sum(1 for _, chat in in_window if chat in alerts.acked)),
        }
        span = counted_until - started
        report.rows.append(("telegram: most sends in any 1 s", 1, figures["faults_max_telegram_rate"],
                            figures["faults_max_telegram_rate"], figures["faults_max_telegram_rate"],
                            f"msg/s (allowed {TELEGRAM_PER_S})"))
        report.rows.append(("twilio: most calls in any 1 s", 1, figures["faults_max_cps"], figures["faults_max_cps"],
                            figures["faults_max_cps"], f"calls/s (allowed {ALLOWED_CPS})"))
        if idle_delays:
            report.add("high alert delay, idle", idle_delays, "ms from the ingest answer (baseline: nothing else runs)")
        if delays:
            report.add("high alert delay, campaign", delays, "ms from the ingest answer (p50 in the median column)")
        report.notes.append(
            f"window {window_s:.1f} s from when the campaign's first message was seen, then the campaign"
            f" cancelled and alerts waited for up to {ALERT_GRACE_S:.0f} s; rates over {span:.0f} s from the"
            f" campaign's creation: {len(sends)} messages ({len(sends) / max(span, 1e-9):.1f}/s), {len(calls)} calls")
        report.notes.append(
            f"allowed: Telegram {TELEGRAM_PER_S} msg/s per bot and 1/s per chat (both bot replicas use one token;"
            f" each bot's own limit is its default, SHOUHU_BOT_GLOBAL_PER_S unset); calls {ALLOWED_CPS}/s"
            f" (SHOUHU_CALLS_PER_S={ALLOWED_CPS}, given to each callcenter); the sandbox's own limits off")
        report.notes.append(
            f"Telegram sandbox: sent {tg_stats['sent']}, its own peak second {tg_stats.get('max_sent_in_any_second')},"
            f" per-chat violations (< 1 s after the last to the chat) {tg_stats['per_chat_violations']},"
            f" 429 {tg_stats['rejected_429']}; Twilio sandbox: created {tw_stats['created']}, its own peak second"
            f" {tw_stats['max_calls_in_any_second']} (counts calls < 0.95 s apart), 429 {tw_stats['rejected_429']}")
        report.notes.append(
            f"high alerts: {len(alerts.acked)} acknowledged ({len(alerts.failed)} failed"
            f"{': ' + alerts.failed[0] if alerts.failed else ''}), {len(arrived)} arrived, {missing} not within"
            f" the grace (counted as waited: a lower bound); from just before the request: p99"
            f" {_percentile(from_send, 99) if from_send else 0:.0f} ms; p99 during the campaign / p99 idle"
            f" ({len(idle_delays)} alerts, {len(idle.acked) - len(idle_arrived)} not arrived) ="
            f" {figures['faults_high_alert_delay_p99_ms'] / max(figures['faults_high_alert_delay_idle_p99_ms'], 1):.1f}"
            f" (p99 of {len(delays)} is their worst)")
        report.notes.append(
            f"campaign: {figures['faults_campaign_sent_in_window']:.0f} messages in the window"
            f" ({figures['faults_campaign_sent_in_window'] / window_s:.1f}/s); after cancelling it reads"
            f" {campaign_now['status']}, report {campaign_now.get('report')}")
        report.notes.extend(cluster.error_notes())
        report.notes.append(load_average_note("at the end"))
        failed = False
        return figures
    finally:
        stop.set()
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        if control is not None:
            control.close()
        await db.close()
        if cluster is not None:
            await cluster.close(failed=failed, pg=pg)
        await asyncio.to_thread(pg.stop)
        report.print()
