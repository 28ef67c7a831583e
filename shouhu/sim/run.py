"""`shouhu simulate`: one province day against the real services, on a fresh database, then its figures.

What runs: the sandbox (fake Telegram and Twilio, `shouhu sandbox`) and one of each service (`shouhu serve
dispatcher|bot|callcenter`), each a subprocess (bench/cluster.py's `Proc`) on a free port, on a fresh,
migrated database on the configured PostgreSQL server (dropped afterwards), every one on the same fast clock
(SHOUHU_TIME_SCALE, SHOUHU_TIME_EPOCH chosen so the services' clock reads the day's first hour when the
simulation starts). The simulated people (agents.py) act on them through HTTP only; the figures are read from
the database afterwards (figures.py).

Limits on a fast clock: the services keep Twilio's and Telegram's limits in real seconds (a real provider's
limit does not speed up with our clock), so a day compressed `time_scale` times, at `volume_fraction` of the
province, needs those limits `time_scale x volume_fraction` times higher in real seconds to stand for the same
limit per simulated second. The run sets them so, up to what one machine can drive (MAX_*_PER_S below), and
prints what it set: above that, this machine's outbound rate is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.clock import LOCAL_TZ

# What one 2-core machine can drive in real seconds (the sandbox and the services share it).
MAX_CALLS_PER_S = 40.0
MAX_ALERTS_PER_S = 200.0
START_MARGIN_S = 60.0  # real seconds between starting the services and the day's first second
SERVICE_NAMES = ("dispatcher", "bot", "callcenter")


@dataclass
class Run:
    figures: dict[str, Any]
    samples: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> Any:
    """A fresh migrated database on the server (dropped after): its URL, audit key and services' password."""
    from shared.db import raw_connect, with_database
    from shared.migrate import migrate

    name = f"shouhu_sim_{secrets.token_hex(6)}"
    admin = await raw_connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        url = with_database(server_url, name)
        audit_key, password = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        await migrate(url, audit_key=audit_key, service_password=password)
        yield url, audit_key, password
    finally:
        admin = await raw_connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _epoch_for(day_start: datetime, at_real: float, scale: float) -> datetime:
    """The epoch E that makes a ScaledClock read `day_start` at real time `at_real`:
    E + (at - E) * S = D  =>  E = (S * at - D) / (S - 1)."""
    d = day_start.timestamp()
    return datetime.fromtimestamp((scale * at_real - d) / (scale - 1), UTC)


async def simulate(scenario: Any, *, server_url: str, progress: Any = None, start_margin_s: float | None = START_MARGIN_S,
                   before_drop: Any = None) -> Run:
    """Run the day; returns the figures (database) and the samples over the day (queue depth, seats).

    `before_drop`: an async function given the day's database URL once the figures are read, before the
    database is dropped (e.g. `shouhu export-history`'s export, to see what a day leaves behind)."""
    from bench.cluster import BenchDb, Proc, bind_chats, make_keys
    from bench.ingest import _free_ports
    from shouhu.sim import agents
    from shouhu.sim.driver import Driver
    from shouhu.sim.figures import collect
    from shouhu.sim.population import population

    say = progress or (lambda _msg: None)
    s = scenario
    scale = s.time_scale
    people = population(s)
    n_seats = s.scaled(max(s.seats.on_duty(h) for h in range(24)))
    officers_per_district = s.scaled(s.officers.per_district)
    calls_per_s = min(MAX_CALLS_PER_S, s.calls_per_s * scale * s.volume_fraction)
    alerts_per_s = min(MAX_ALERTS_PER_S, 30 * scale * s.volume_fraction)
    notes = [f"volume: {len(people):,} warnings sent ({s.volume_fraction:.0%} of the province's day),"
             f" {n_seats} seats at most on duty, {officers_per_district} officer(s) per district",
             f"clock: x{scale:g} (a {s.day_h:g} h day in {s.day_h * 3600 / scale / 60:.1f} min real,"
             f" then {s.drain_h:g} h to finish)",
             f"limits (real seconds): {calls_per_s:g} calls/s, {alerts_per_s:g} Telegram messages/s"
             f" (the province's {s.calls_per_s} calls/s and Telegram's 30/s x scale x volume, capped at what this"
             " machine drives)"]
    async with fresh_database(server_url) as (db_url, audit_key, password):
        say("keys ...")
        wanted = [("ingest", "33", "sim senders"), ("supervisor", "33", "sim supervisor"),
                  ("officer", "33", "sim duty desk")]
        wanted += [("operator", s.seats.unit, f"sim seat {i}") for i in range(n_seats)]
        regions = s.region_codes()
        wanted += [("officer", r, f"sim officer {r}-{j}") for r in regions for j in range(officers_per_district)]
        made = await make_keys(db_url, audit_key, wanted)
        keys = {"ingest": made[0], "supervisor": made[1], "officer_desk": made[2]}
        seat_keys = made[3:3 + n_seats]
        officer_keys = made[3 + n_seats:]

        ports = _free_ports(4)
        sandbox_url = f"http://127.0.0.1:{ports[0]}"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("TELEGRAM_", "TWILIO_")) and k not in ("SHOUHU_POLICY",)}
        env = base | {
            "DATABASE_URL": db_url, "SHOUHU_AUDIT_KEY": audit_key, "SHOUHU_SERVICE_DB_PASSWORD": password,
            "SHOUHU_LOG_LEVEL": "WARNING", "SHOUHU_ENV": "development", "SHOUHU_TIME_SCALE": f"{scale:g}",
            "SHOUHU_SANDBOX_URL": sandbox_url, "TELEGRAM_API_BASE": sandbox_url, "TWILIO_API_BASE": sandbox_url,
            "CALLCENTER_PUBLIC_URL": f"http://127.0.0.1:{ports[3]}",
            "SHOUHU_CALLS_PER_S": f"{calls_per_s:g}", "SHOUHU_BOT_GLOBAL_PER_S": f"{alerts_per_s:g}",
            "SHOUHU_SEAT_WRAP_UP_S": "0",  # wrap-up is the simulated seat's own (a simpy timeout)
            "SHOUHU_WORKER_POLL_INTERVAL_S": "0.2", "SHOUHU_DB_POOL_SIZE": "8"}
        # The sandbox's phones follow SHOUHU_TIME_SCALE alone (no epoch): it starts, and every phone is scripted,
        # before the services' clock is fixed.
        procs = [Proc("sandbox", ["sandbox"], ports[0], env, "/healthz")]
        db = BenchDb(db_url)
        clients: list[httpx.AsyncClient] = []
        failed = True
        try:
            say("sandbox: phones and chats ...")
            procs[0].spawn()
            await procs[0].wait_ready()
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            sandbox, dispatcher, callcenter = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                                                 limits=limits)
                                               for port in (ports[0], ports[1], ports[3]))
            clients = [sandbox, dispatcher, callcenter]
            await _prepare_sandbox(sandbox, s, people, seat_phones=[_seat_phone(i) for i in range(n_seats)])
            with_chat = [c for c in people if c.has_chat]
            if with_chat:
                r = await sandbox.post("/sandbox/telegram/chats/bulk", json={"phones": [c.phone for c in with_chat]})
                r.raise_for_status()
                for c, chat_id in zip(with_chat, r.json()["chat_ids"], strict=True):
                    c.chat_id = chat_id
                await bind_chats(db, [c.chat_id for c in with_chat], [c.phone for c in with_chat])

            now_real = time.time()
            day_start: datetime | None = None
            if start_margin_s is None or scale == 1:
                # Not aligned: the clock starts at the real now and the day starts once the services are ready,
                # at whatever hour that is (tests whose people answer the same at every hour).
                epoch = datetime.fromtimestamp(now_real, UTC)
            else:
                # The services' clock reads the day's first hour (start_h, local time) start_margin_s from now.
                local = datetime.fromtimestamp(now_real + start_margin_s, LOCAL_TZ)
                day_start = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=s.start_h)
                epoch = _epoch_for(day_start, now_real + start_margin_s, scale)
            for name in SERVICE_NAMES:
                procs.append(Proc(name, ["serve", name], ports[1 + SERVICE_NAMES.index(name)],
                                  env | {"SHOUHU_TIME_EPOCH": epoch.isoformat()}, "/readyz"))
            say("services ...")
            for p in procs[1:]:
                p.spawn()
            await asyncio.gather(*(p.wait_ready() for p in procs[1:]))
            probe = Driver(scale=scale, epoch=epoch, day_start=epoch)
            if day_start is not None and probe.service_now() > day_start:
                notes.append(f"the services took longer than {start_margin_s:.0f} s to start: the day starts at"
                             " the hour the clock reads now, not at the scenario's start_h")
                day_start = None
            if day_start is None:
                day_start = probe.service_now() + timedelta(seconds=scale)  # one real second from now
            notes.append(f"the day starts at {day_start.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M} local time on the"
                         " services' clock")
            driver = Driver(scale=scale, epoch=epoch, day_start=day_start)
            world = agents.World(s=s, driver=driver, citizens=people, dispatcher=dispatcher, callcenter=callcenter,
                                 sandbox=sandbox, keys=keys, rng=random.Random(s.seed + 1))
            world.by_chat = {c.chat_id: c for c in with_chat if c.chat_id is not None}
            import simpy

            world.free_seats = simpy.Store(driver.env)
            seats = [agents.Seat(key, _seat_phone(i)) for i, key in enumerate(seat_keys)]
            officers: dict[str, simpy.Store] = {}
            for i, region in enumerate(regions):
                store = simpy.Store(driver.env)
                store.items.extend(officer_keys[i * officers_per_district:(i + 1) * officers_per_district])
                officers[region] = store

            async def queued_operator_calls(now: datetime) -> int:
                rows = await db.fetch("SELECT count(*) AS n FROM jobs WHERE kind = 'call.operator'"
                                      " AND status = 'queued' AND run_at <= $1", now)
                return int(rows[0]["n"])

            for gen, what in ((agents.senders(world), "senders"), (agents.telegram_citizens(world), "telegram"),
                              (agents.seat_shifts(world, seats), "shifts"), (agents.seat_claims(world), "claims"),
                              (agents.duty_desk(world, officers), "duty desk"),
                              (agents.supervisor(world), "supervisor"),
                              (agents.sampler(world, queued_operator_calls, say), "sampler")):
                driver.process(gen, what)
            say(f"the day runs ({s.day_h:g} h + {s.drain_h:g} h on a x{scale:g} clock:"
                f" {(s.day_h + s.drain_h) * 3600 / scale / 60:.1f} min) ...")
            await driver.run((s.day_h + s.drain_h) * 3600)
            wall_s = driver.wall_s
            await driver.settle()
            end = driver.service_now()
            say("figures ...")
            figures = await collect(db, source_refs=[f"sim-{s.seed}-{c.index}" for c in people],
                                    day_start=day_start, end=end)
            figures["sim_seat_occupancy"] = round(world.seat_busy_s / world.seat_on_duty_s, 3) \
                if world.seat_on_duty_s else None
            figures["sim_wall_s"] = round(wall_s, 1)
            # The services' own latency is real seconds, which the fast clock multiplies by the scale: the same
            # figures in real seconds on this machine.
            for p in (50, 95):
                value = figures.get(f"sim_first_attempt_p{p}_s")
                figures[f"sim_first_attempt_p{p}_real_s"] = round(value / scale, 2) if value is not None else None
            figures["sim_agents_max_lag_s"] = round(driver.max_lag_s, 1)
            figures["sim_agent_counts"] = dict(world.counts)
            figures["sim_agent_errors"] = dict(world.errors.most_common(20))
            figures["sim_agent_failures"] = driver.errors[:20]
            figures["sim_scenario"] = {"name": s.name, "time_scale": scale, "volume_fraction": s.volume_fraction,
                                       "seats_max": n_seats, "officers_per_district": officers_per_district,
                                       "calls_per_s_real": calls_per_s, "alerts_per_s_real": alerts_per_s}
            if before_drop is not None:
                await before_drop(db_url)
            failed = False
            return Run(figures=figures, samples=world.samples, notes=notes)
        finally:
            for c in clients:
                await c.aclose()
            await db.close()
            for p in reversed(procs):
                await asyncio.to_thread(p.stop)
            for p in procs:
                if failed:
                    print(f"--- {p.name} (last lines) ---\n{p.log_tail()}", file=sys.stderr)
                p.log_path.unlink(missing_ok=True)


def _seat_phone(i: int) -> str:
    return f"+86571960{i:05d}"


async def _prepare_sandbox(sandbox: httpx.AsyncClient, s: Any, people: list[Any], *, seat_phones: list[str]) -> None:
    """No provider limit in the sandbox (the services pace themselves); every phone scripted before the day."""
    (await sandbox.post("/sandbox/twilio/limits", json={"calls_per_s": 0})).raise_for_status()
    (await sandbox.post("/sandbox/telegram/limits", json={"global_per_s": 0, "per_chat_per_s": 0})).raise_for_status()
    scripts = [(p, {"behaviour": "answer", "ring_s": 1, "digits": []}) for p in seat_phones]
    for c in people:
        script: dict[str, Any] = {"behaviour": "answer" if c.answers_auto_call else "no-answer",
                                  "ring_s": s.answering.ring_s}
        if c.answers_auto_call:
            # one entry per <Gather>: the key, and again if asked again (silence for "not me")
            script["digits"] = [c.key, c.key]
        scripts.append((c.phone, script))
    sem = asyncio.Semaphore(16)

    async def put(phone: str, body: dict[str, Any]) -> None:
        async with sem:
            for attempt in range(5):  # a loaded machine resets the odd keep-alive connection; a PUT is safe again
                try:
                    r = await sandbox.put(f"/sandbox/twilio/numbers/{phone}", json=body)
                    r.raise_for_status()
                    return
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))

    await asyncio.gather(*(put(p, b) for p, b in scripts))


@contextlib.asynccontextmanager
async def private_server() -> Any:
    """A PostgreSQL server of the run's own (bench/cluster.py's PrivatePostgres, max_connections 300): a shared
    server's connection slots are not the simulation's to take."""
    from bench.cluster import PrivatePostgres

    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.start)
        yield pg.url
    finally:
        await asyncio.to_thread(pg.stop)
