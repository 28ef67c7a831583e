"""A replica set on this machine, for the benchmarks that need one (``faults``, ``replicas``).

All on 127.0.0.1 and all started (and stopped) by the benchmark that asks for it:

- ``PrivatePostgres``: a PostgreSQL 15 of our own (``initdb`` / ``pg_ctl`` from ``SHOUHU_PG_BIN``, default
  /usr/lib/postgresql/15/bin) in a temporary directory on a free port, max_connections 300, migrated as
  ``shouhu up`` does (``migrated``: owner URL, audit key and services' password made for the run). It is the
  only server a drill may restart. As root, the PostgreSQL commands run as the ``postgres`` user (initdb
  refuses root).
- ``ReplicaSet``: the sandbox (``shouhu sandbox``) and two replicas of each service (``shouhu serve
  dispatcher|bot|callcenter``), each its own process (``Proc``: its own session, so ``kill -9`` is real and
  cleanup can take its whole group) on its own port. Each pair of bots and of callcenters shares one public
  address, a round-robin TCP proxy (``Proxy``) in the benchmark's process that skips a replica refusing
  connections (what a load balancer or DNS round robin in front of two replicas does): Twilio's webhooks go to
  the callcenters' (CALLCENTER_PUBLIC_URL), Telegram's updates to the bots' (TELEGRAM_WEBHOOK_URL: two bots
  cannot both long-poll one token; Telegram answers one of them 409 Conflict).
- ``BenchDb``: the benchmark's own connection, which reconnects while the server restarts; ``bind_chats``
  writes chats' bindings as the bot's /start and contact sharing would leave them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.ingest import BenchError, _free_ports, _Http, _verbatim, error_lines_of, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path(os.environ.get("SHOUHU_PG_BIN", "/usr/lib/postgresql/15/bin"))
TG = "/sandbox/telegram"
TW = "/sandbox/twilio"
SERVICES = ("dispatcher", "bot", "callcenter")
# Settings that would change what is measured if inherited from the caller's environment.
ENV_DROPPED = ("DATABASE_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_URL", "TELEGRAM_WEBHOOK_SECRET",
               "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "SHOUHU_POLICY",
               "SHOUHU_BOT_GLOBAL_PER_S", "SHOUHU_BOT_PER_CHAT_INTERVAL_S", "SHOUHU_CALLCENTER_WORKER_CONCURRENCY",
               "SHOUHU_WORKER_POLL_INTERVAL_S", "SHOUHU_DAILY_CALL_CAP", "SHOUHU_WORKER_LEASE_S",
               "SHOUHU_BOOTSTRAP_ADMIN_KEY", "SHOUHU_CALLS_PER_S", "SHOUHU_DB_POOL_SIZE", "SHOUHU_SEAT_WRAP_UP_S")


class ClusterError(BenchError):
    """The replica set could not run as designed (a process did not start, the database did not come back)."""


# ---- the private PostgreSQL ---------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of our own in a temporary directory: the only one the drills restart."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="shouhu-bench-pg-"))
        self.data = self.dir / "data"
        self.port = _free_ports(1)[0]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.started = False
        # initdb refuses to run as root: then the server runs as the postgres user, which owns the directory.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
            (self.dir / "pg_ctl.out").touch()
            shutil.chown(self.dir / "pg_ctl.out", self.user)

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts inherits it and would hold a pipe open for ever.
        out = self.dir / "pg_ctl.out"
        with out.open("w") as sink:
            done = subprocess.run([str(PG_BIN / args[0]), *args[1:]], user=self.user, stdout=sink,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s, cwd=self.dir,
                                  check=False)
        if done.returncode != 0:
            raise ClusterError(f"{args[0]} failed ({done.returncode}): {out.read_text(errors='replace')[-2000:]}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
                " -c shared_buffers=128MB")
        self.started = True  # from here on, stop() must run pg_ctl stop
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", opts, "-w", "-t", "60",
                  "start")

    def restart(self) -> float:
        """pg_ctl restart -m fast (what an operator does): seconds until it accepts connections again."""
        t0 = time.perf_counter()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-m", "fast", "-w", "-t", "60",
                  "restart")
        return time.perf_counter() - t0

    def stop(self) -> None:
        try:
            if self.started and (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self.dir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# ---- processes ----------------------------------------------------------------------------------------------


class Proc:
    """`shouhu <args> --port P` in its own session (so kill -9 hits it, and cleanup its whole group)."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str], ready_path: str) -> None:
        self.name, self.args, self.port, self.env, self.ready_path = name, args, port, env, ready_path
        self.log_path = Path(tempfile.mkstemp(prefix=f"shouhu-bench-{name.replace(' ', '-')}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []  # every process this replica has been

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "shouhu.cli", *self.args, "--port", str(self.port)],
                                         env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pids.append(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Seconds until `ready_path` answers 200."""
        return await wait_until_ready(self, timeout_s=timeout_s, pause_s=0.1, error=ClusterError)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 15 s; never raises."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything the service left in its group

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def error_lines(self, limit: int = 5) -> list[str]:
        return error_lines_of(self.log_path.read_text(errors="replace"), limit)


class Proxy:
    """Round-robin TCP proxy: each new connection goes to the next backend that accepts it."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = _free_ports(1)[0]
        self.next = 0
        self.refused = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for i in range(len(self.backends)):
            port = self.backends[(self.next + i) % len(self.backends)]
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                self.next = (self.next + i + 1) % len(self.backends)
                break
            except (OSError, TimeoutError):
                self.refused += 1
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


# ---- the bench's own database connection (it survives the restart) -------------------------------------------


class BenchDb:
    """One connection of the bench's own, shared by its tasks one query at a time (asyncpg allows no more)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self.lock = asyncio.Lock()

    async def fetch(self, query: str, *args: Any, tries: int = 40) -> list[Any]:
        async with self.lock:
            return await self._fetch(query, *args, tries=tries)

    async def _fetch(self, query: str, *args: Any, tries: int) -> list[Any]:
        """The rows, reconnecting (bounded) while the server restarts."""
        import asyncpg

        from shared.db import raw_connect

        gone = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.AdminShutdownError,
                asyncpg.CannotConnectNowError, asyncpg.InternalClientError)  # the last: a connection cut mid-query
        last: BaseException | None = None
        for attempt in range(tries):
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await raw_connect(self.url)
                return await self.conn.fetch(query, *args)
            except gone as exc:
                last = exc
            with contextlib.suppress(Exception):
                if self.conn is not None:
                    await self.conn.close()
            self.conn = None
            await asyncio.sleep(min(0.25 * (attempt + 1), 2))
        raise ClusterError(f"the private database did not answer: {last!r}")

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()


# ---- set-up ----------------------------------------------------------------------------------------------------


async def migrated(pg: PrivatePostgres) -> tuple[str, str]:
    """Migrate the private server as `shouhu up` does: (audit key, services' database password), made for the run."""
    from shared.migrate import migrate

    audit_key = secrets.token_urlsafe(32)
    service_password = secrets.token_urlsafe(24)
    await migrate(pg.url, audit_key=audit_key, service_password=service_password)
    return audit_key, service_password


async def make_keys(url: str, audit_key: str, wanted: list[tuple[str, str, str]]) -> list[str]:
    """API keys for (role, unit, name), in that order, created as `shouhu keys create` does."""
    from shared.auth.service import create_key
    from shared.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(url, pool_size=1, application_name="shouhu-bench", audit_key=audit_key)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            return [(await create_key(session, role=role, unit=unit, name=name))[1] for role, unit, name in wanted]
    finally:
        await engine.dispose()


async def bind_chats(db: BenchDb, chat_ids: list[int], phones: list[str]) -> None:
    """Sandbox chats bound to phones, written as the bot's /start and contact sharing leave them."""
    await db.fetch("INSERT INTO bot_chats (chat_id, user_id, lang) SELECT c, c, 'zh' FROM unnest($1::bigint[]) AS u(c)",
                   chat_ids)
    await db.fetch("INSERT INTO chat_bindings (chat_id, phone, user_id, lang, active, bound_at)"
                   " SELECT c, p, c, 'zh', true, now() FROM unnest($1::bigint[], $2::text[]) AS u(c, p)",
                   chat_ids, phones)


class ReplicaSet:
    """The sandbox and two replicas of each service on the private PostgreSQL, the bots and callcenters each
    behind one address (a round-robin proxy). `env` is added to every process's environment (the services'
    settings for the run: pool size, calls per second, policy ...)."""

    def __init__(self, pg: PrivatePostgres, *, audit_key: str, service_password: str, env: dict[str, str]) -> None:
        ports = _free_ports(7)
        self.sandbox_port = ports[0]
        base = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
        base |= {"SHOUHU_LOG_LEVEL": "WARNING", "SHOUHU_ENV": "development", "DATABASE_URL": pg.url,
                 "SHOUHU_AUDIT_KEY": audit_key, "SHOUHU_SERVICE_DB_PASSWORD": service_password,
                 "SHOUHU_SANDBOX_URL": f"http://127.0.0.1:{self.sandbox_port}",
                 "TELEGRAM_API_BASE": f"http://127.0.0.1:{self.sandbox_port}",
                 "TWILIO_API_BASE": f"http://127.0.0.1:{self.sandbox_port}", **env}
        self.sandbox = Proc("sandbox", ["sandbox"], self.sandbox_port, base, "/healthz")
        self.callcenter_proxy = Proxy(ports[5:7])
        self.bot_proxy = Proxy(ports[3:5])
        # Two bots cannot both long-poll one token (Telegram answers the other 409 Conflict, and each backs off
        # for seconds): two replicas take updates by webhook, behind one address, as they would in production.
        self.env = base | {"CALLCENTER_PUBLIC_URL": f"http://127.0.0.1:{self.callcenter_proxy.port}",
                           "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{self.bot_proxy.port}/telegram/webhook",
                           "TELEGRAM_WEBHOOK_SECRET": secrets.token_urlsafe(24)}
        self.procs: dict[str, list[Proc]] = {}
        for i, (service, port) in enumerate(zip((s for s in SERVICES for _ in range(2)), ports[1:], strict=True)):
            self.procs.setdefault(service, []).append(Proc(f"{service} {i % 2}", ["serve", service], port, self.env,
                                                           "/readyz"))
        self.everything = [self.sandbox, *(p for ps in self.procs.values() for p in ps)]
        self.proxies = [self.callcenter_proxy, self.bot_proxy]

    def ports(self, service: str) -> list[int]:
        return [p.port for p in self.procs[service]]

    async def start_sandbox(self, settings: list[tuple[str, dict[str, Any]]]) -> None:
        """The sandbox and the proxies, then each (control path, body) POSTed to the sandbox."""
        self.sandbox.spawn()
        for proxy in self.proxies:
            await proxy.start()
        await self.sandbox.wait_ready()
        control = _Http(self.sandbox_port)
        try:
            for path, body in settings:
                status, data = await control.request("POST", path, orjson.dumps(body))
                if status != 200:
                    raise ClusterError(f"the sandbox refused {path}: {_verbatim(status, data)}")
        finally:
            control.close()

    async def start_services(self) -> None:
        """Every replica, until each answers /readyz."""
        services = [p for ps in self.procs.values() for p in ps]
        for proc in services:
            proc.spawn()
        await asyncio.gather(*(p.wait_ready() for p in services))

    def describe(self) -> str:
        return (f"sandbox :{self.sandbox_port}, " + ", ".join(f"{p.name} :{p.port}" for ps in self.procs.values()
                                                               for p in ps)
                + f", callcenter public URL (proxy) :{self.callcenter_proxy.port}, bot webhook (proxy)"
                f" :{self.bot_proxy.port}")

    def error_notes(self, per_process: int = 3) -> list[str]:
        return [f"{proc.name} log: {line[:300]}" for proc in self.everything for line in proc.error_lines(per_process)]

    async def close(self, *, failed: bool, pg: PrivatePostgres | None = None) -> None:
        """Stop every process and proxy (never raises); on failure print each one's last lines (and the server's)."""
        for proxy in self.proxies:
            await proxy.close()
        for proc in reversed(self.everything):
            await asyncio.to_thread(proc.stop)
        if failed:
            for proc in self.everything:
                print(f"--- {proc.name} (last lines) ---\n{proc.log_tail()}", file=sys.stderr)
            if pg is not None:
                print(f"--- private PostgreSQL (last lines) ---\n{pg.log_tail()}", file=sys.stderr)
        keep = os.environ.get("SHOUHU_BENCH_KEEP_LOGS")  # for a reader who wants the services' own words
        for proc in self.everything:
            if keep:
                print(f"{proc.name} log kept: {proc.log_path}", file=sys.stderr)
            else:
                proc.log_path.unlink(missing_ok=True)


def load_average_note(when: str) -> str:
    """The machine's load average as a note ("at the start", "at the end"): the figures' context on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {when} (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f}"
