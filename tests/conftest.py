"""Test databases: a real PostgreSQL (TEST_DATABASE_URL, or the embedded server), one fresh database per test.

The schema is migrated once into a template database (named after a hash of
the migrations, so a changed migration builds a new one); each test gets its
own clone, so tests may commit, run several processes, and run in parallel
(pytest-xdist) without seeing each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.clock import FrozenClock
from shared.db import make_engine, make_sessionmaker, raw_connect, with_database
from shared.migrate import MIGRATIONS_DIR, migrate

ROOT = Path(__file__).resolve().parent.parent
# The audit key of every test process and of the services they start (settings read it from the
# environment): the template's chain head is signed with it, so a developer's own key must not leak in.
TEST_AUDIT_KEY = "test-audit-key-not-a-secret-0123456789abcdef"
os.environ["SHOUHU_AUDIT_KEY"] = TEST_AUDIT_KEY
os.environ.pop("SHOUHU_SERVICE_DB_PASSWORD", None)
# 10:00 in Beijing: inside every tier's call window, so tests see calls go out at once unless they move the clock.
T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def _server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return configured
    from shared.embedded import start_embedded_postgres

    return start_embedded_postgres(ROOT / ".shouhu" / "test-pgdata")


def _schema_fingerprint() -> str:
    digest = hashlib.sha256()
    # The migrations, and the services' role's grants that `migrate` adds after them.
    for path in [*sorted(MIGRATIONS_DIR.rglob("*.py")), ROOT / "shared" / "db_roles.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
async def template_db(server_url: str) -> str:
    """The migrated template, built once per schema version across all xdist workers."""
    name = f"shouhu_tpl_{_schema_fingerprint()}"
    admin = await raw_connect(server_url)
    try:
        await admin.execute("SELECT pg_advisory_lock(735201)")
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                building = name + "_build"
                await admin.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{building}"')
                await migrate(with_database(server_url, building), audit_key=TEST_AUDIT_KEY)
                await admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            await admin.execute("SELECT pg_advisory_unlock(735201)")
    finally:
        await admin.close()
    return name


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"shouhu_t_{uuid.uuid4().hex[:16]}"
    admin = await raw_connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield with_database(server_url, name)
    admin = await raw_connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def sessionmaker(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions as the database's owner (what migrations run as; the services connect as their own role)."""
    engine = make_engine(db_url, pool_size=5, audit_key=TEST_AUDIT_KEY)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


class DispatcherHarness:
    """The dispatcher app in-process over real HTTP semantics (httpx ASGI transport), with a frozen clock."""

    def __init__(self, app, client: httpx.AsyncClient, clock: FrozenClock, db_url: str) -> None:  # noqa: ANN001
        self.app = app
        self.client = client
        self.clock = clock
        self.db_url = db_url
        self._keys: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def runtime(self):  # noqa: ANN201
        return self.app.state.runtime

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.sessionmaker

    async def headers(self, role: str = "ingest", unit: str = "33") -> dict[str, str]:
        """Authorization headers for a key with this role and unit (created on first use)."""
        from shared.auth.service import create_key
        from shared.db import transaction

        if (role, unit) not in self._keys:
            async with transaction(self.sessionmaker) as session:
                _, full = await create_key(session, role=role, unit=unit, name=f"test-{role}-{unit or 'all'}")
            self._keys[(role, unit)] = {"Authorization": f"Bearer {full}"}
        return self._keys[(role, unit)]

    def worker(self, **options):  # noqa: ANN001, ANN201
        from services.dispatcher.jobs import make_worker

        return make_worker(self.sessionmaker, store=self.runtime.store, clock=self.clock, database_url=None,
                           **options)

    async def run_dispatcher_jobs(self) -> int:
        """Run every runnable dispatcher job (timers, results) at the clock's current time."""
        return await self.worker().drain()

    async def jobs(self, **where: object) -> list[dict]:
        from sqlalchemy import text

        clauses = " AND ".join(f"{k} = :{k}" for k in where) or "true"
        async with self.sessionmaker() as session:
            rows = (await session.execute(text(f"SELECT * FROM jobs WHERE {clauses} ORDER BY id"), where)).mappings()
            return [dict(r) for r in rows]


@pytest.fixture
async def dispatcher(db_url: str, clock: FrozenClock, request: pytest.FixtureRequest) -> AsyncIterator[DispatcherHarness]:
    from services.dispatcher.app import create_app
    from services.dispatcher.settings import DispatcherSettings

    marker = request.node.get_closest_marker("policy")
    settings = DispatcherSettings(DATABASE_URL=db_url, SHOUHU_DISPATCHER_WORKER=False,
                                  SHOUHU_POLICY=marker.args[0] if marker else None, SHOUHU_KEY_CACHE_TTL_S=0)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher") as client:
            yield DispatcherHarness(app, client, clock, db_url)


def warning(**overrides: object) -> dict:
    """A valid warning record; override any field."""
    record: dict = {
        "source": "bank-test",
        "source_ref": uuid.uuid4().hex,
        "phone": "13800138000",
        "fraud_type": "fake_investment",
        "signal": "fraud_sms_received",
        "region_code": "330106",
        "occurred_at": "2026-11-21T09:55:00+08:00",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


# The reports' hand-counted data set (tests/dispatcher/test_reports.py, tests/console).
@pytest.fixture
async def known(dispatcher) -> dict:  # noqa: ANN001
    """Four tasks, opened at T0:
    A high   330106  closed "dissuaded" by an officer at T0+30 min (in time, never marked reached)
    B medium 330102  the citizen acknowledges at T0+1 h (reached and closed in time)
    C low    330106  never answered: breached at T0+72 h, still open
    D high   330206  never answered: breached at T0+2 h, still open
    The report runs at T0+80 h over [T0, T0+4 days).
    """
    from services.dispatcher.tasks.plans import RESULT_KIND
    from shared.queue.service import NewJob, enqueue

    h = await dispatcher.headers("ingest", "")
    post = dispatcher.client.post
    a = (await post("/v1/warnings", json=warning(phone="13900000001", signal="transfer_in_progress",
                                                 region_code="330106"), headers=h)).json()
    b = (await post("/v1/warnings", json=warning(phone="13900000002", signal="fraud_call_received",
                                                 region_code="330102"), headers=h)).json()
    c = (await post("/v1/warnings", json=warning(phone="13900000003", region_code="330106"), headers=h)).json()
    d = (await post("/v1/warnings", json=warning(phone="13900000004", signal="screen_sharing",
                                                 region_code="330206"), headers=h)).json()
    assert [x["tier"] for x in (a, b, c, d)] == ["high", "medium", "low", "high"]
    dispatcher.clock.advance(minutes=30)
    await post(f"/v1/tasks/{a['task_id']}/feedback", json={"outcome": "dissuaded"},
               headers=await dispatcher.headers("officer", "3301"))
    dispatcher.clock.advance(minutes=30)
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=dispatcher.clock.now(),
                                       payload={"task_id": b["task_id"], "channel": "bot_alert", "attempt": 1,
                                                "result": "pressed", "feedback": "acknowledged"})])
    await dispatcher.run_dispatcher_jobs()
    dispatcher.clock.set(T0 + timedelta(hours=80))
    for _ in range(3):
        await dispatcher.run_dispatcher_jobs()
    return {"from": T0.isoformat(), "to": (T0 + timedelta(days=4)).isoformat()}


# ---- the sandbox (fake Telegram and Twilio), over real HTTP -------------------------------------------

def free_port() -> int:
    """A port free right now, for servers started as subprocesses (in-process servers use listening_socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket already bound to a free port, handed to the server (no window for another process to take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket | None = None, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn (in this event loop) for the duration; yields its base URL.

    lifespan="off" serves an app whose lifespan a fixture already runs (the `dispatcher` harness).

    A short graceful shutdown: an open long poll would otherwise hold the server for its whole timeout.
    """
    sock = sock or listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan,
                                           timeout_graceful_shutdown=0.5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    started = time.monotonic()
    while not server.started:
        assert not task.done(), "the server stopped while starting"
        assert time.monotonic() - started < 10, "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class Sandbox:
    """The sandbox's control API: play the citizen."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.AsyncClient(base_url=base, timeout=10)

    async def call(self, method: str, path: str, **json: Any) -> Any:
        resp = await self.http.request(method, f"/sandbox/telegram{path}", json=json or None)
        assert resp.status_code < 400, resp.text
        return resp.json()

    async def citizen(self, phone: str | None = None) -> int:
        return (await self.call("POST", "/chats", phone=phone))["chat_id"]

    async def say(self, chat_id: int, text: str) -> None:
        await self.call("POST", f"/chats/{chat_id}/send", text=text)

    async def share_contact(self, chat_id: int, phone: str, user_id: int | None = None) -> None:
        body: dict[str, Any] = {"phone_number": phone}
        if user_id is not None:
            body["user_id"] = user_id
        await self.call("POST", f"/chats/{chat_id}/contact", **body)

    async def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for m in (await self.call("GET", f"/chats/{chat_id}/messages"))["messages"] if m["from"] == "bot"]

    async def press(self, chat_id: int, message_id: int, data: str) -> str:
        return (await self.call("POST", f"/chats/{chat_id}/press", message_id=message_id, data=data))[
            "callback_query_id"]

    async def callback(self, callback_query_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/callbacks/{callback_query_id}")


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 5.0, *, what: str = "condition",
                     every_s: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy (the bot answers asynchronously); fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s (last value: {value!r})")
        await asyncio.sleep(every_s)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    from infra.sandbox.app import create_app as create_sandbox

    async with serve(create_sandbox()) as base:
        box = Sandbox(base)
        yield box
        await box.http.aclose()




# ---- a real headless Chromium (Debian's package), driven by Playwright -------------------------------

CHROMIUM = os.environ.get("SHOUHU_CHROMIUM", "/usr/bin/chromium")
BROWSER_SKIP_REASON = "browser tests did not run"


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium per test worker; skipped, and said so at the end of the run, when it is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{BROWSER_SKIP_REASON}: no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) at the size of a PC seat's screen, 1366x768."""
    context = await chromium.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    # The consoles' Content-Security-Policy must never block their own scripts: any refusal fails the test.
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.csp_refused = refused  # a test that provokes a refusal on purpose clears it
    yield page
    await context.close()
    assert not refused, f"the page's Content-Security-Policy refused something: {refused}"


async def sign_in(page: Any, base_url: str, api_key: str) -> None:
    """Sign in to a console through its form, as a person would."""
    await page.goto(f"{base_url}/console")
    await page.fill("input[name=api_key]", api_key)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/console**")


async def console_sign_in(client: httpx.AsyncClient, api_key: str) -> tuple[httpx.Response, str | None]:
    """Sign an httpx client in through a console's form, as a browser without JavaScript would.

    Returns the sign-in response and the signed-in page's CSRF token (None when the sign-in was refused).
    """
    form = await client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    resp = await client.post("/console/sign-in", data={"api_key": api_key, "csrf_token": token, "next": "/console"})
    if resp.status_code != 303:
        return resp, None
    page = await client.get("/console")
    return resp, re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)


def cjk_fonts() -> list[str] | None:
    """The font families fontconfig knows for Chinese; None when fontconfig itself is missing."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    found = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if line.strip()]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Read from the reports, which xdist forwards from every worker to this process.
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if BROWSER_SKIP_REASON in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"BROWSER TESTS DID NOT RUN ({len(skipped)} skipped): Chromium is not installed at {CHROMIUM}. "
            "Install Debian's 'chromium' package (.ci/run does) to run the console tests.", red=True, bold=True)
    elif Path(CHROMIUM).exists() and not cjk_fonts():
        # The tests read text, so they pass; but screenshots and anyone looking at the pages see boxes.
        terminalreporter.write_line(
            "WARNING: no Chinese (CJK) font is installed: Chromium draws the consoles' Chinese as empty boxes in"
            " screenshots. Install Debian's 'fonts-wqy-microhei' (.ci/run does).", yellow=True, bold=True)
