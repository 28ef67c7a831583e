"""A database outage answers 503 with Retry-After (never a 500, never a dropped connection), and passes by itself.

Each test runs its own private PostgreSQL (initdb in a temporary directory, a free port) and stops, starts and
restarts that one only: the shared server the other tests use is never touched.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from shared.auth.service import create_key
from shared.db import database_unavailable, make_engine, make_sessionmaker, transaction
from shared.migrate import migrate
from tests.conftest import TEST_AUDIT_KEY, free_port, listening_socket, serve, warning

PG_BIN = Path(os.environ.get("SHOUHU_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """A PostgreSQL server of this test's own, in a temporary directory, on a free port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shouhu-outage-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # initdb and postgres refuse to run as root: run them as the system's postgres user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.root, "postgres")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.prefix, str(PG_BIN / tool), *args], capture_output=True, text=True,
                              timeout=90, check=False)
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8", "--no-sync")

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", options,
                  *args)

    async def start(self) -> None:
        await asyncio.to_thread(self._ctl, "start")

    async def stop(self) -> None:
        await asyncio.to_thread(self._ctl, "-m", "fast", "stop")

    async def restart(self) -> None:
        await asyncio.to_thread(self._ctl, "-m", "fast", "restart")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    if not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (SHOUHU_PG_BIN)")
    server = PrivatePostgres()
    try:
        await asyncio.to_thread(server.init)
        await server.start()
        await migrate(server.url, audit_key=TEST_AUDIT_KEY)
        yield server
    finally:
        await asyncio.to_thread(server.remove)


def _wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    try:
        raise orig
    except BaseException as exc:  # noqa: BLE001
        return DBAPIError("SELECT 1", None, exc, connection_invalidated=invalidated)


def _while_handling(error: BaseException, context: BaseException) -> BaseException:
    error.__context__ = context
    return error


@pytest.mark.parametrize(("error", "unavailable"), [
    (ConnectionRefusedError(111, "Connect call failed"), True),
    (TimeoutError(), True),
    (SQLAlchemyTimeoutError("QueuePool limit reached"), True),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
    (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
    (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), True),
    (_wrapped(ValueError("the connection is gone"), invalidated=True), True),
    (_wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")), True),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), False),
    (_wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")), False),
    (_wrapped(asyncpg.exceptions.SerializationError("could not serialize access")), False),
    (_while_handling(ValueError("bad value"), ConnectionResetError()), False),
])
def test_what_counts_as_the_database_being_unavailable(error: BaseException, unavailable: bool) -> None:
    """Lost or refused connections, restarts and pool timeouts are an outage (503); a bad statement is not."""
    assert database_unavailable(error) is unavailable


async def new_key(url: str, role: str, unit: str) -> dict[str, str]:
    engine = make_engine(url, pool_size=1, audit_key=TEST_AUDIT_KEY)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            _, full = await create_key(session, role=role, unit=unit, name=f"outage-{role}")
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {full}"}


async def until(check, timeout_s: float = 15.0) -> float:  # noqa: ANN001
    """Seconds until `check()` is true (polled), or fail."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text)
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.json()["detail"]


async def test_dispatcher_answers_503_while_the_database_is_down_and_200_once_it_is_back(private_pg) -> None:
    """Database stopped: API and readyz answer 503 with Retry-After (no 500, no dropped connection); started: 200."""
    from services.dispatcher.app import create_app
    from services.dispatcher.settings import DispatcherSettings

    settings = DispatcherSettings(DATABASE_URL=private_pg.url, SHOUHU_DISPATCHER_WORKER=False,
                                  SHOUHU_KEY_CACHE_TTL_S=0)
    cached = await new_key(private_pg.url, "supervisor", "")  # used before the outage
    ingest = await new_key(private_pg.url, "ingest", "33")
    sock = listening_socket()
    async with serve(create_app(settings), sock) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/v1/tasks", headers=cached)).status_code == 200

        await private_pg.stop()
        started = time.monotonic()
        assert (await http.get("/readyz")).status_code == 503
        assert time.monotonic() - started < 5, "readyz must answer quickly while the database is away"
        assert_unavailable(await http.get("/v1/tasks", headers=cached))
        assert_unavailable(await http.post("/v1/warnings", json=warning(source_ref="outage-1"), headers=ingest))
        assert_unavailable(await http.get("/v1/audit/verify", headers=cached))

        await private_pg.start()

        async def served() -> bool:
            return (await http.get("/v1/tasks", headers=cached)).status_code == 200

        assert await until(served) < 10
        assert (await http.get("/readyz")).status_code == 200
        resp = await http.post("/v1/warnings", json=warning(source_ref="outage-2"), headers=ingest)
        assert resp.status_code == 201, resp.text


async def test_a_database_restart_leaves_no_stale_connection_behind(private_pg) -> None:
    """After a restart every pooled connection is dead: the next requests reconnect (pre-ping), none fails."""
    from services.dispatcher.app import create_app
    from services.dispatcher.settings import DispatcherSettings

    settings = DispatcherSettings(DATABASE_URL=private_pg.url, SHOUHU_DISPATCHER_WORKER=False,
                                  SHOUHU_KEY_CACHE_TTL_S=0)
    headers = await new_key(private_pg.url, "supervisor", "")
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        # Fill the pool with connections that the restart will kill.
        statuses = [r.status_code for r in await asyncio.gather(
            *(http.get("/v1/tasks", headers=headers) for _ in range(8)))]
        assert statuses == [200] * 8

        await private_pg.restart()
        started = time.monotonic()
        statuses = [r.status_code for r in await asyncio.gather(
            *(http.get("/v1/tasks", headers=headers) for _ in range(16)))]
        assert statuses == [200] * 16
        assert time.monotonic() - started < 5
        assert (await http.get("/readyz")).status_code == 200


async def test_callcenter_webhooks_answer_503_during_an_outage_and_a_reconciliation_follows(private_pg) -> None:
    """A Twilio callback refused while the database is down gets 503 (Twilio may retry) and notes a gap, so the
    reconciler sweeps every unfinished call once the database is back; readyz says not ready meanwhile."""
    from twilio.request_validator import RequestValidator

    from services.callcenter.app import create_app
    from services.callcenter.settings import CallcenterSettings

    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = CallcenterSettings(DATABASE_URL=private_pg.url, CALLCENTER_PUBLIC_URL=base,
                                  TWILIO_API_BASE="http://127.0.0.1:9", SHOUHU_CALLCENTER_WORKER=False)
    app = create_app(settings)
    async with serve(app, sock), httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
        await private_pg.stop()
        assert (await http.get("/readyz")).status_code == 503
        gaps = app.state.reconciler._gaps
        form = {"CallSid": "CA" + "0" * 32, "CallStatus": "completed", "CallDuration": "12"}
        url = f"{base}/twilio/status?attempt=1"
        signature = RequestValidator(settings.auth_token()).compute_signature(url, form)
        resp = await http.post("/twilio/status?attempt=1", data=form, headers={"X-Twilio-Signature": signature})
        assert_unavailable(resp)
        assert app.state.reconciler._gaps > gaps
        await private_pg.start()

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        assert await until(ready) < 10


async def test_under_load_a_database_restart_gives_only_503s_and_recovers_in_seconds(private_pg) -> None:
    """Reads and ingests keep coming while the database restarts: every answer is 2xx or 503 with Retry-After
    (no 500, no dropped connection), and within seconds of its return every request succeeds again."""
    from services.dispatcher.app import create_app
    from services.dispatcher.settings import DispatcherSettings

    settings = DispatcherSettings(DATABASE_URL=private_pg.url, SHOUHU_DISPATCHER_WORKER=False,
                                  SHOUHU_KEY_CACHE_TTL_S=0)
    reader = await new_key(private_pg.url, "supervisor", "")
    ingest = await new_key(private_pg.url, "ingest", "33")
    answers: list[tuple[float, int]] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def client(http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 2:
                    resp = await http.get("/v1/tasks", headers=reader)
                else:
                    resp = await http.post("/v1/warnings", json=warning(source_ref=f"load-{n}-{i}"), headers=ingest)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            answers.append((time.monotonic(), resp.status_code))
            if resp.status_code == 503:
                assert "retry-after" in resp.headers
                await asyncio.sleep(0.05)
            elif resp.status_code not in (200, 201):
                failures.append(f"{resp.status_code}: {resp.text[:200]}")

    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        clients = [asyncio.create_task(client(http, n)) for n in range(6)]
        await asyncio.sleep(1)
        await private_pg.restart()
        back_at = time.monotonic()
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*clients)
    assert not failures, failures[:5]
    counts = collections.Counter(status for _, status in answers)  # typically a few 503s in the restart's second
    late = [status for at, status in answers if at > back_at + 2]
    assert late and all(status in (200, 201) for status in late), (counts, late[:20])


async def test_the_bot_webhook_answers_503_during_an_outage_so_telegram_delivers_the_update_again(
        private_pg, sandbox) -> None:
    """An update the bot cannot store while the database is down gets 503 (Telegram retries it), not 200 and
    lost; readyz says not ready; once the database is back the same update is handled."""
    from services.bot.app import create_app as create_bot
    from services.bot.settings import BotSettings

    settings = BotSettings(DATABASE_URL=private_pg.url, TELEGRAM_API_BASE=sandbox.base, SHOUHU_BOT_WORKER=False,
                           TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook",
                           TELEGRAM_WEBHOOK_SECRET="s3cret-token_value")
    app = create_bot(settings)
    chat_id = await sandbox.citizen()
    update = {"update_id": 434343, "message": {
        "message_id": 1, "date": 1700000000, "chat": {"id": chat_id, "type": "private"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "测试"}, "text": "/start",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}
    secret = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_value"}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        await private_pg.stop()
        assert (await http.get("/readyz")).status_code == 503
        assert_unavailable(await http.post("/telegram/webhook", json=update, headers=secret))
        await private_pg.start()

        async def handled() -> bool:
            resp = await http.post("/telegram/webhook", json=update, headers=secret)
            assert resp.status_code in (200, 503), resp.text
            return resp.status_code == 200 and resp.json()["handled"]

        assert await until(handled) < 10
