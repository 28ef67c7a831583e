"""Schemathesis over the three services' OpenAPI: no 5xx, every answer documented and matching its schema.

Each service runs in-process (schemathesis's ASGI transport runs its lifespan on its own event loop) on a
database of its own, with real keys of the roles each operation needs. Generation is deterministic (a fixed
seed, derandomized Hypothesis, no example database) and bounded per operation, so a CI run repeats exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from schemathesis.python import asgi

from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from services.callcenter.app import create_app as create_callcenter
from services.callcenter.settings import CallcenterSettings
from services.dispatcher.app import create_app as create_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.db import make_engine, make_sessionmaker, raw_connect, transaction, with_database
from tests.conftest import listening_socket, url_of, warning

WEBHOOK_SECRET = "conformance-webhook-secret"
# Examples per operation in the fuzzing phase; the coverage phase adds its own deterministic boundary cases.
MAX_EXAMPLES = 15

CONFIG = schemathesis.Config.from_dict({
    "seed": 11,
    # A slow shared runner must not fail the run: the checks below are what this test is for.
    "suppress-health-check": ["all"],
    # Unknown query parameters are ignored, as HTTP APIs do (not a violation to refuse); the keys are ours to send.
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "mode": "all",
                   "allow-extra-parameters": False, "with-security-parameters": False},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "negative_data_rejection": {"enabled": True},
        "ignored_auth": {"enabled": True},
    },
})


# The apps are built at import (parametrize needs their schemas); the `services` fixture completes their settings
# with a fresh database (and the Telegram sandbox) before their lifespans start, so the schema tested is the
# schema served. Key cache of 60 s: the keys are created once, and each request would otherwise read them.
SETTINGS: dict[str, Any] = {
    "dispatcher": DispatcherSettings(SHOUHU_DISPATCHER_WORKER=False, SHOUHU_KEY_CACHE_TTL_S=60,
                                     SHOUHU_DB_POOL_SIZE=4),
    # No pause between two messages to one chat: the examples all talk to one chat, and limits are not tested here.
    "bot": BotSettings(SHOUHU_BOT_WORKER=False, SHOUHU_BOT_POLLING=False, SHOUHU_DB_POOL_SIZE=4,
                       SHOUHU_BOT_PER_CHAT_INTERVAL_S=0,
                       TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook",
                       TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET),
    "callcenter": CallcenterSettings(SHOUHU_CALLCENTER_WORKER=False, SHOUHU_DB_POOL_SIZE=4),
}
APPS: dict[str, FastAPI] = {"dispatcher": create_dispatcher(SETTINGS["dispatcher"]), "bot": create_bot(SETTINGS["bot"]),
                            "callcenter": create_callcenter(SETTINGS["callcenter"])}


def _schema(service: str) -> Any:
    schema = schemathesis.openapi.from_dict(APPS[service].openapi(), config=CONFIG)
    schema.app = APPS[service]  # as schemathesis.openapi.from_asgi does, without starting the app at import
    return schema


DISPATCHER, BOT, CALLCENTER = _schema("dispatcher"), _schema("bot"), _schema("callcenter")

# Which key each operation is called with (role, unit): the role it needs, in a unit that holds the seeded data.
ROLES: dict[str, tuple[str, str]] = {
    "warnings": ("ingest", "33"),
    "visits": ("officer", "3301"),
    "seat operators": ("operator", "33"),
}
REQUESTERS = {("POST", "/v1/tasks/{task_id}/visits"): ("supervisor", "33")}


def _run(coro: Any) -> Any:
    """Run a coroutine on a private event loop (the tests' own loop belongs to pytest-asyncio)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@dataclass
class Services:
    apps: dict[str, FastAPI]
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)

    turn: int = 0

    def aim(self, case: schemathesis.Case) -> None:
        """Every other well-formed id in a path becomes one of a seeded object, so answers past 404 are seen."""
        for name, value in (case.path_parameters or {}).items():
            if name in self.ids and _is_uuid(value):
                self.turn += 1
                if self.turn % 2:
                    case.path_parameters[name] = self.ids[name][self.turn // 2 % len(self.ids[name])]

    def headers(self, case: schemathesis.Case) -> dict[str, str]:
        op = case.operation
        if op.path == "/telegram/webhook":
            return {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        role = REQUESTERS.get((op.method.upper(), op.path)) or ROLES.get((op.tags or ["-"])[0], ("supervisor", "33"))
        return {"Authorization": f"Bearer {self.keys[role]}"}


class _ThreadedServer:
    """An ASGI app served by uvicorn on its own thread and event loop (the Telegram sandbox the bot talks to)."""

    def __init__(self, app: Any) -> None:
        self.sock = listening_socket()
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                                    timeout_graceful_shutdown=0.5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the sandbox did not start"
            threading.Event().wait(0.01)
        return url_of(self.sock)

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


async def _make_database(server_url: str, template: str) -> str:
    name = f"shouhu_t_{uuid.uuid4().hex[:16]}"
    admin = await raw_connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return name


async def _drop_database(server_url: str, name: str) -> None:
    admin = await raw_connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _make_keys(db_url: str, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    from shared.auth.service import create_key

    engine = make_engine(db_url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            return {(role, unit): (await create_key(session, role=role, unit=unit, name=f"conformance-{role}"))[1]
                    for role, unit in wanted}
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def services(server_url: str, template_db: str) -> Iterator[Services]:
    """The three services on one fresh database, with keys of every role and a few warnings to read back."""
    from infra.sandbox.app import create_app as create_sandbox

    name = _run(_make_database(server_url, template_db))
    db_url = with_database(server_url, name)
    keys = _run(_make_keys(db_url, sorted({*ROLES.values(), *REQUESTERS.values(), ("supervisor", "33")})))
    try:
        with _ThreadedServer(create_sandbox()) as sandbox_url:
            for settings in SETTINGS.values():
                settings.database_url = db_url
            SETTINGS["bot"].telegram_api_base = SETTINGS["callcenter"].twilio_api_base = sandbox_url
            found = Services(apps=APPS, keys=keys)
            try:
                with asgi.get_client(APPS["dispatcher"]) as client:  # starts the dispatcher's lifespan
                    found.ids = _seed(client, keys)
                yield found
            finally:
                asgi.shutdown_lifespans()
    finally:
        _run(_drop_database(server_url, name))


def _seed(client: Any, keys: dict[tuple[str, str], str]) -> dict[str, list[str]]:
    """Things the generated requests can find (their ids replace every other generated id): three tasks, a visit,
    an emergency with its payment stop, a campaign."""

    def call(method: str, path: str, role: tuple[str, str], body: dict[str, Any], status: int = 200) -> Any:
        resp = client.request(method, path, json=body, headers={"Authorization": f"Bearer {keys[role]}"})
        assert resp.status_code == status, resp.text
        return resp.json()

    ingest, supervisor = ("ingest", "33"), ("supervisor", "33")
    tasks = [call("POST", "/v1/warnings", ingest, warning(phone=f"1390000000{i}", signal=signal,
                                                          region_code="330106"), 201)["task_id"]
             for i, signal in enumerate(("transfer_in_progress", "fraud_call_received", "fraud_sms_received"))]
    visit = call("POST", f"/v1/tasks/{tasks[0]}/visits", supervisor, {"note": "她现在在银行"}, 201)["visit_id"]
    call("POST", f"/v1/tasks/{tasks[1]}/feedback", supervisor, {"outcome": "loss_reported"})
    campaign = call("POST", "/v1/campaigns", supervisor, {"name": "conformance", "text": "请勿转账"}, 201)
    return {"task_id": tasks, "visit_id": [visit], "campaign_id": [campaign["campaign_id"]]}


def _check(services: Services, service: str, case: schemathesis.Case) -> None:
    services.aim(case)
    case.call_and_validate(headers=services.headers(case))


@DISPATCHER.parametrize()
def test_dispatcher_api_conforms(case: schemathesis.Case, services: Services) -> None:
    """Every dispatcher operation answers generated good and bad input without a 5xx, as its OpenAPI documents."""
    _check(services, "dispatcher", case)


@BOT.parametrize()
def test_bot_api_conforms(case: schemathesis.Case, services: Services) -> None:
    """The bot's webhook answers generated updates without a 5xx, as its OpenAPI documents."""
    _check(services, "bot", case)


@CALLCENTER.parametrize()
def test_callcenter_api_conforms(case: schemathesis.Case, services: Services) -> None:
    """Every seat-operator operation answers generated good and bad input without a 5xx, as documented."""
    _check(services, "callcenter", case)
