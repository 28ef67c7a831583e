"""The `shouhu` command: run, migrate, manage keys, import warnings, benchmark."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from shared.logging import configure_logging

app = typer.Typer(help="守护 Shouhu: reach people being defrauded right now.", no_args_is_help=True,
                  add_completion=False)
keys_app = typer.Typer(help="API keys (stored hashed; each has a role and a unit).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The audit log's keyed hash chain.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

SERVICES = {
    "dispatcher": ("services.dispatcher.app:create_app", 8000),
    "bot": ("services.bot.app:create_app", 8001),
    "callcenter": ("services.callcenter.app:create_app", 8002),
}


async def _demo_keys(url: str, data_dir: Path, *, audit_key: str,
                     roles: tuple[str, ...] = ("supervisor", "operator")) -> dict[str, str]:
    """A supervisor and an operator key for unit 33 (or the roles given), made once per data directory
    (development only); returns every demo key kept there."""
    import json

    from shared.auth.service import create_key
    from shared.db import make_engine, make_sessionmaker, transaction
    from shared.sql import sql

    key_file = data_dir / "demo-keys.json"
    keys: dict[str, str] = json.loads(key_file.read_text()) if key_file.exists() else {}
    engine = make_engine(url, pool_size=1, application_name="shouhu-up", audit_key=audit_key)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            for role in roles:
                key_id = keys[role].split("_")[1] if role in keys else None
                known = key_id and (await session.execute(sql("SELECT 1 FROM api_keys WHERE key_id = :k"),
                                                          {"k": key_id})).first()
                if not known:
                    _, keys[role] = await create_key(session, role=role, unit="33", name=f"demo-{role}",
                                                     secret_value=keys.get(role))
    finally:
        await engine.dispose()
    key_file.write_text(json.dumps(keys, indent=1) + "\n")
    key_file.chmod(0o600)
    return keys


def _settings():  # noqa: ANN202
    from shared.settings import CommonSettings

    return CommonSettings()


def _database_url() -> str:
    """The owner's URL (DATABASE_URL, or the embedded server's): what migrations and these admin commands use."""
    from shared.db import resolve_database_url

    settings = _settings()
    return resolve_database_url(settings.database_url, settings.data_dir)


@app.command()
def migrate() -> None:
    """Apply database migrations, then make and grant the services' role (waits for the database first)."""
    from shared.db import wait_for_database
    from shared.migrate import head_revision
    from shared.migrate import migrate as run_migrate

    configure_logging()
    settings = _settings()
    url = _database_url()
    asyncio.run(wait_for_database(url))
    asyncio.run(run_migrate(url, audit_key=settings.audit_secret(), service_password=settings.service_password()))
    typer.echo(f"database at migration {head_revision()}")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="dispatcher, bot or callcenter")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port (default 8000 / 8001 / 8002)")] = None,
) -> None:
    """Run one service, as in production (one process; scale by running more replicas)."""
    import uvicorn

    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    from shared.settings import CommonSettings

    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_json, service=service)
    factory, default_port = SERVICES[service]
    uvicorn.run(factory, factory=True, host=host, port=port or default_port, log_config=None, access_log=False,
                loop="uvloop", http="httptools", lifespan="on")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8090,
) -> None:
    """Run the local sandbox: a fake Telegram Bot API (and a page to play the citizen at /)."""
    import uvicorn

    from infra.sandbox.app import create_app
    from infra.sandbox.twilio import TwilioSandbox
    from shared.settings import CommonSettings

    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_json, service="sandbox")
    typer.echo(f"Sandbox on http://{host}:{port}/  (bots: TELEGRAM_API_BASE=http://{host}:{port})")
    # On a fast clock (SHOUHU_TIME_SCALE) the phones are as fast: the sandbox's time_scale multiplies its waits
    # (ringing, Gather timeouts), so it is the inverse, within the (0, 100] its control API allows.
    twilio = TwilioSandbox(time_scale=min(100.0, 1 / settings.time_scale))
    uvicorn.run(functools.partial(create_app, twilio=twilio), factory=True, host=host, port=port, log_config=None,
                access_log=False, loop="uvloop", http="httptools", lifespan="on",
                # Long polls in flight would otherwise hold Ctrl-C for up to their timeout.
                timeout_graceful_shutdown=2)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="ingest, operator, officer, supervisor or admin")],
    unit: Annotated[str, typer.Option(help="region-code prefix: 33, 3301, 330106, or 'all'")],
    name: Annotated[str | None, typer.Option(help="who holds the key (shown in the audit log)")] = None,
) -> None:
    """Create an API key and print it (it is shown once; only its hash is stored)."""
    from shared.auth.service import InvalidKeySpec, create_key
    from shared.db import make_engine, make_sessionmaker, transaction

    async def run() -> str:
        engine = make_engine(_database_url(), pool_size=1, audit_key=_settings().audit_secret())
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                _, full = await create_key(session, role=role, unit=unit, name=name or f"{role}-{unit}")
            return full
        finally:
            await engine.dispose()

    try:
        typer.echo(asyncio.run(run()))
    except InvalidKeySpec as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Verify the chain, then print a signed head of it (entries, hash, signature) to keep outside the database.

    Later, GET /v1/audit/verify?checkpoint=<the checkpoint line> finds any entry
    removed or rewritten since, even by someone holding the audit key. Exit 1
    (and no checkpoint) when the chain does not verify: a checkpoint vouches for it.
    """
    import json
    from datetime import UTC, datetime

    from shared.audit.keys import Checkpoint, key_bytes
    from shared.audit.service import verify_chain
    from shared.db import make_engine, make_sessionmaker

    configure_logging("WARNING")
    settings = _settings()
    key = key_bytes(settings.audit_secret())

    async def run():  # noqa: ANN202
        engine = make_engine(_database_url(), pool_size=1, application_name="shouhu-audit")
        try:
            async with make_sessionmaker(engine)() as session:
                return await verify_chain(session, key=key)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    if not report.ok:
        typer.echo(f"the audit chain does not verify: entry {report.first_bad}: {report.reason}; "
                   "no checkpoint made", err=True)
        raise typer.Exit(1)
    checkpoint = Checkpoint.make(key, entries=report.head_seq, hash_=report.head_hash)
    typer.echo(json.dumps({"entries": checkpoint.entries, "hash": checkpoint.hash,
                           "signature": checkpoint.signature, "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "checkpoint": checkpoint.token()}, indent=1))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a .csv or .jsonl file of warning records", exists=True,
                                         dir_okay=False)],
    batch_size: Annotated[int, typer.Option(help="records per transaction")] = 1000,
    errors: Annotated[Path | None, typer.Option(help="also write the per-line error report to this CSV")] = None,
    actor: Annotated[str, typer.Option(help="name recorded in the audit log")] = "cli:import",
) -> None:
    """Bulk-ingest warnings with a progress bar and a per-line error report (exit 1 if any line was rejected)."""
    from services.dispatcher.importer import run_import

    configure_logging("WARNING")
    code = asyncio.run(run_import(file, database_url=_database_url(), batch_size=batch_size,
                                  errors_path=errors, actor=actor))
    raise typer.Exit(code)


@app.command()
def bench(
    names: Annotated[list[str] | None, typer.Argument(help="benchmarks to run (default: all)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON object of figures last")] = False,
    quick: Annotated[bool, typer.Option(help="a short run (smoke test of the harness)")] = False,
) -> None:
    """Run the benchmarks and print their figures with a baseline measured in the same run."""
    from bench import run_benchmarks

    configure_logging("WARNING")
    raise typer.Exit(asyncio.run(run_benchmarks(names or [], as_json=json_, quick=quick)))


# The first run's clock: a high-tier task's 2 h pass in 24 s, so a breach shows within the first minute.
DEMO_TIME_SCALE = 300.0
DEMO_COUNT = 300


@app.command()
def demo(
    dispatcher: Annotated[str, typer.Option(help="the dispatcher's base URL")] = "http://127.0.0.1:8000",
    sandbox_url: Annotated[str | None, typer.Option(
        "--sandbox", help="the sandbox's base URL (its phones and chats are scripted); '' for none")] = None,
    count: Annotated[int, typer.Option(help="warnings in the day")] = DEMO_COUNT,
    at_once: Annotated[bool | None, typer.Option(
        "--at-once/--paced", help="post all now (default at scale 1) or paced over the clock's day")] = None,
    seed: Annotated[int | None, typer.Option(help="the same day again (source_refs stay fresh)")] = None,
) -> None:
    """Load a realistic day of warnings across six Zhejiang districts through the dispatcher's API.

    Runs against the services `shouhu up` started (on SHOUHU_TIME_SCALE's clock; `shouhu up` starts it itself on
    an empty database). Its citizens' phones and Telegram chats are scripted in the sandbox.
    """
    from shouhu.demo import run_demo

    settings = _settings()
    configure_logging("WARNING")
    if sandbox_url is None:
        sandbox_url = os.environ.get("SHOUHU_SANDBOX_URL", "http://127.0.0.1:8090")
    keys = asyncio.run(_demo_keys(_database_url(), settings.data_dir, audit_key=settings.audit_secret(),
                                  roles=("ingest",)))
    asyncio.run(run_demo(dispatcher_url=dispatcher, ingest_key=keys["ingest"], sandbox_url=sandbox_url or None,
                         clock=settings.clock(), count=count, at_once=at_once, seed=seed,
                         say=lambda line: typer.echo(line)))


def demo_wanted(*, flag: bool, environ: Mapping[str, str], environment: str,
                database_is_empty: Callable[[], bool]) -> bool:
    """Whether `shouhu up` loads the demo day: on an empty database, in development, unless told not to
    (--no-demo, SHOUHU_DEMO=0), and only where nobody real can be messaged or called (no Telegram token, no
    Twilio credentials: the demo's phone numbers are made up)."""
    real_telegram = bool(environ.get("TELEGRAM_BOT_TOKEN"))
    real_twilio = bool(environ.get("TWILIO_ACCOUNT_SID") or environ.get("TWILIO_AUTH_TOKEN"))
    return (flag and environ.get("SHOUHU_DEMO", "1") != "0" and environment == "development"
            and not real_telegram and not real_twilio and database_is_empty())


async def _database_is_empty(url: str, *, audit_key: str) -> bool:
    """No warning has ever been posted (a fresh clone's first `make run`)."""
    from shared.db import make_engine, make_sessionmaker
    from shared.sql import sql

    engine = make_engine(url, pool_size=1, application_name="shouhu-up", audit_key=audit_key)
    try:
        async with make_sessionmaker(engine)() as session:
            return not (await session.execute(sql("SELECT EXISTS (SELECT 1 FROM warnings)"))).scalar()
    finally:
        await engine.dispose()


@app.command()
def simulate(
    scenario: Annotated[Path | None, typer.Argument(help="scenario file (YAML); default: shouhu/sim/default.yaml")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON object of figures last")] = False,
    report: Annotated[Path, typer.Option(help="where to write the HTML report")] = Path("shouhu-simulate.html"),
    lang: Annotated[str, typer.Option(help="report language: zh or en")] = "zh",
    database_url: Annotated[str | None, typer.Option(
        help="PostgreSQL server to create the run's database on (default: a private server of the run's own)")] = None,
) -> None:
    """A simulated province day against the real services (sandbox for Telegram, Twilio and the citizens)."""
    import json

    from shouhu.sim import report as html_report
    from shouhu.sim.run import private_server
    from shouhu.sim.run import simulate as run_day
    from shouhu.sim.scenario import load

    configure_logging("WARNING")
    if lang not in ("zh", "en"):
        raise typer.BadParameter("zh or en", param_hint="--lang")
    day = load(scenario)

    def say(msg: str) -> None:
        typer.echo(msg, err=json_)

    async def go():  # noqa: ANN202
        if database_url:
            return await run_day(day, server_url=database_url, progress=say)
        async with private_server() as url:
            return await run_day(day, server_url=url, progress=say)

    started = time.monotonic()
    result = asyncio.run(go())
    load_note = "load average (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    notes = [*result.notes, f"real time, start to figures: {time.monotonic() - started:.0f} s; {load_note}"]
    html_report.write(report, result.figures, result.samples, notes, lang=lang)
    for note in notes:
        say(note)
    from shouhu.sim.figures import TARGETS, bottleneck

    zh, en = bottleneck(result.figures, TARGETS)
    say(f"bottleneck: {en}\n瓶颈：{zh}\nreport: {report}")
    if json_:
        typer.echo(json.dumps(result.figures, ensure_ascii=False, default=str))
    else:
        for name in ("sim_warnings_sent", "sim_warnings_lost", "sim_high_in_time_pct", "sim_medium_in_time_pct",
                     "sim_low_in_time_pct", "sim_first_attempt_p95_s", "sim_first_human_p95_s", "sim_seat_occupancy",
                     "sim_breaches", "sim_wall_s"):
            typer.echo(f"{name:<28}{result.figures.get(name)}")


@app.command()
def plan(
    scenario: Annotated[Path | None, typer.Argument(help="scenario file (YAML); default: shouhu/sim/default.yaml")] = None,
    history: Annotated[Path | None, typer.Option(
        help="plan for the demand in this exported history (shouhu export-history) instead of the scenario's;"
             " the scenario still gives the shifts, the target and whatever the history lacks",
        exists=True, dir_okay=False)] = None,
    target_share: Annotated[float | None, typer.Option(
        min=0.5, max=0.9999, help="share of the high tier to handle in time (default: the scenario's, 0.99)")] = None,
    live: Annotated[bool, typer.Option(
        "--live", help="then run `shouhu simulate`'s day with the plan's staff and print its figures too")] = False,
    database_url: Annotated[str | None, typer.Option(
        help="--live: PostgreSQL server for the day's database (default: a private server of the run's own)")] = None,
    start_now: Annotated[bool, typer.Option(
        "--start-now", help="--live: start the day at the hour the clock reads now, not at the scenario's start_h"
                            " (saves a minute of waiting; for citizens who answer the same at every hour)")] = False,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON object of figures last")] = False,
) -> None:
    """Seats per shift and officers per district for the scenario's target: Erlang C, then a simulation."""
    import json

    from shouhu.plan import describe, live_figures, plan_and_confirm, staffed
    from shouhu.sim.scenario import load

    day = load(scenario)
    if target_share is not None:
        day = day.model_copy(update={"plan_target": {**day.plan_target, "high_in_time": target_share}})
    work = None
    source = None
    if history is not None:
        from shouhu import history as hist

        if live:
            # The live day needs the citizens' behaviour (answer rates, what they say), which a history does not
            # record: its live figures would answer for the default citizens, not for the history.
            raise typer.BadParameter("--live runs a scenario's day; a history has no citizens to simulate",
                                     param_hint="--live")
        try:
            loaded = hist.read(history)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--history") from exc
        derived = hist.derive(loaded, day)
        day, work, notes = hist.workload(derived, day)
        source = hist.describe_source(derived, notes, path=history)
    result = plan_and_confirm(day, work=work)
    if live:
        from shouhu.sim.run import private_server
        from shouhu.sim.run import simulate as run_day

        configure_logging("WARNING")
        staffed_day = staffed(day, result)

        async def go():  # noqa: ANN202
            say = functools.partial(typer.echo, err=True)
            # None: no alignment of the services' clock to start_h (simulate's default waits a minute for it).
            margin = {"start_margin_s": None} if start_now else {}
            if database_url:
                return await run_day(staffed_day, server_url=database_url, progress=say, **margin)
            async with private_server() as url:
                return await run_day(staffed_day, server_url=url, progress=say, **margin)

        typer.echo("the live day (shouhu simulate) with the plan's staff ...", err=True)
        result.live = live_figures(asyncio.run(go()).figures)
    typer.echo(describe(day, result, source=source))
    if json_:
        typer.echo(json.dumps(result.figures()))


@app.command("export-history")
def export_history(
    since: Annotated[str | None, typer.Option(
        help="first task's creation time, ISO 8601 (without a zone: local time); default: the first task's day")] = None,
    until: Annotated[str | None, typer.Option(help="end of the window, ISO 8601 (exclusive); default: now")] = None,
    out: Annotated[Path | None, typer.Option(help="file to write (default: standard output)", dir_okay=False)] = None,
) -> None:
    """Export the tasks' history for `shouhu plan --history` (read-only; JSON Lines; nothing personal)."""
    from shared.clock import LOCAL_TZ
    from shouhu.history import export

    def parse(value: str | None, name: str) -> datetime | None:
        if value is None:
            return None
        try:
            at = datetime.fromisoformat(value)
        except ValueError as exc:
            raise typer.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=name) from exc
        return at if at.tzinfo else at.replace(tzinfo=LOCAL_TZ)

    configure_logging("WARNING")
    window = parse(since, "--since"), parse(until, "--until")
    url = _database_url()
    now = _settings().clock().now()
    if out is None:
        written = asyncio.run(export(url, sys.stdout, since=window[0], until=window[1], now=now))
    else:
        with out.open("w", encoding="utf-8") as f:
            written = asyncio.run(export(url, f, since=window[0], until=window[1], now=now))
    typer.echo(f"{written:,} tasks exported" + (f" to {out}" if out else ""), err=True)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address the services listen on")] = "127.0.0.1",
    demo: Annotated[bool, typer.Option(
        "--demo/--no-demo", help="on an empty database, load the demo day (also SHOUHU_DEMO=0)")] = True,
) -> None:
    """Start the whole system locally: database (embedded unless DATABASE_URL is set), migrations, services."""
    settings = _settings()
    configure_logging(settings.log_level, json=False, service="up")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    typer.echo("Starting the database (embedded PostgreSQL under ./.shouhu unless DATABASE_URL is set)...")
    url = _database_url()
    from shared.db import wait_for_database
    from shared.migrate import migrate as run_migrate

    # The audit key and the services' database password: from the environment, else made once and kept
    # under the data directory like the admin key (never in the database), and handed to every service.
    audit_key = settings.audit_secret()
    service_password = settings.service_password() or _kept_secret(settings.data_dir / "service-db.password")
    asyncio.run(wait_for_database(url))
    asyncio.run(run_migrate(url, audit_key=audit_key, service_password=service_password))
    key_file = settings.data_dir / "admin.key"
    admin_key = settings.bootstrap_admin_key or _kept_secret(
        key_file, f"shk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}")
    demo_keys = (asyncio.run(_demo_keys(url, settings.data_dir, audit_key=audit_key))
                 if settings.environment == "development" else {})
    # DATABASE_URL stays the owner's: each service connects as the services' role derived from it.
    env = {**os.environ, "DATABASE_URL": url, "SHOUHU_BOOTSTRAP_ADMIN_KEY": admin_key,
           "SHOUHU_AUDIT_KEY": audit_key, "SHOUHU_SERVICE_DB_PASSWORD": service_password}
    children: list[subprocess.Popen[bytes]] = []
    # Without real Telegram or Twilio credentials the local sandbox stands in for them (and gives a page
    # to play the citizen: chats and phone calls).
    real_telegram = bool(os.environ.get("TELEGRAM_BOT_TOKEN"))
    real_twilio = bool(os.environ.get("TWILIO_ACCOUNT_SID") and os.environ.get("TWILIO_AUTH_TOKEN"))
    use_sandbox = not real_telegram or not real_twilio
    run_demo = demo_wanted(flag=demo, environ=os.environ, environment=settings.environment,
                           database_is_empty=lambda: asyncio.run(_database_is_empty(url, audit_key=audit_key)))
    scale = settings.time_scale
    if run_demo and "SHOUHU_TIME_SCALE" not in os.environ:
        scale = DEMO_TIME_SCALE
        env["SHOUHU_TIME_SCALE"] = str(scale)
    if scale != 1 and settings.time_epoch is None:
        # One epoch for every child, so the services' fast clocks agree and start at the real now.
        env["SHOUHU_TIME_EPOCH"] = datetime.now(UTC).isoformat()
    if use_sandbox:
        env.setdefault("SHOUHU_SANDBOX_URL", f"http://{host}:8090")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "shouhu.cli", "sandbox", "--host", host, "--port", "8090"], env=env))
    for service, (_, port) in SERVICES.items():
        children.append(subprocess.Popen(
            [sys.executable, "-m", "shouhu.cli", "serve", service, "--host", host, "--port", str(port)], env=env))
    # The demo posts through the API once the services answer; it ends by itself (not watched like a service).
    demo_child = subprocess.Popen(
        [sys.executable, "-m", "shouhu.cli", "demo", "--dispatcher", f"http://{host}:8000"], env=env,
    ) if run_demo else None
    typer.echo(
        "\nShouhu is starting:\n"
        f"  dispatcher  http://{host}:8000   (API docs: http://{host}:8000/docs)\n"
        f"  bot         http://{host}:8001\n"
        f"  callcenter  http://{host}:8002\n"
        + (f"  sandbox     http://{host}:8090   (fake Telegram and Twilio: play the citizen here)\n" if use_sandbox else "")
        + f"  admin key   {admin_key}   (also in {key_file})\n"
        "\nConsoles (sign in with a key; Chinese by default, English at the top right):\n"
        f"  supervisor  http://{host}:8000/console\n"
        f"  operator    http://{host}:8002/console\n"
        f"  officers    http://{host}:8000/field     (a phone page; shouhu keys create --role officer --unit 330106)\n"
        + "".join(f"  demo {role:<10} {key}   (unit 33, Zhejiang)\n" for role, key in demo_keys.items())
        + (f"\nLoading the demo day: {DEMO_COUNT} warnings across six districts on a {scale:g}x clock (a 2 h"
           f" deadline passes in {7200 / scale:.0f} s).\n  Within a minute: the operator queue has work, alerts and"
           " calls in the sandbox, a visit, an emergency, an escalation and a breach on the supervisor console.\n"
           "  (SHOUHU_DEMO=0 make run, or shouhu up --no-demo, starts on an empty database without it.)\n"
           if run_demo else "")
        + (f"\nThe clock runs {scale:g}x faster than real time. Other commands against this system (shouhu import,"
           f" shouhu demo) need the same clock:\n  export SHOUHU_TIME_SCALE={scale:g}"
           f" SHOUHU_TIME_EPOCH={env.get('SHOUHU_TIME_EPOCH', '')}\n" if scale != 1 else "")
        + "Press Ctrl-C to stop.\n"
    )

    def stop(*_args: object) -> None:
        for child in [*children, *([demo_child] if demo_child else [])]:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        typer.echo("a service stopped; stopping the others", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for child in [*children, *([demo_child] if demo_child else [])]:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def _kept_secret(path: Path, value: str | None = None) -> str:
    """The secret kept in `path` (0600), made on first use."""
    if not path.exists():
        path.write_text((value or secrets.token_urlsafe(32)) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


if __name__ == "__main__":
    app()
