"""What every service exposes: health, readiness (database and migrations), metrics; masked JSON logs."""

from __future__ import annotations

import json

import httpx
import pytest
import structlog

from shared.logging import configure_logging, mask_personal_data


def _app(name: str, db_url: str):  # noqa: ANN202
    import importlib

    module = importlib.import_module(f"services.{name}.app")
    settings_module = importlib.import_module(f"services.{name}.settings")
    settings_cls = next(v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "CommonSettings")
    return module.create_app(settings_cls(DATABASE_URL=db_url, SHOUHU_DISPATCHER_WORKER=False,
                                          SHOUHU_BOT_POLLING=False, SHOUHU_BOT_WORKER=False,
                                          SHOUHU_CALLCENTER_WORKER=False))


@pytest.mark.parametrize("name", ["dispatcher", "bot", "callcenter"])
async def test_health_ready_and_metrics(name: str, db_url: str) -> None:
    """/healthz answers, /readyz checks the database is at the migration head, /metrics is Prometheus text."""
    app = _app(name, db_url)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            assert (await client.get("/healthz")).json()["status"] == "ok"
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            metrics = await client.get("/metrics")
            assert "shouhu_http_requests_total" in metrics.text
            assert (await client.get("/healthz")).headers["x-request-id"]


@pytest.mark.parametrize("name", ["dispatcher", "bot", "callcenter"])
async def test_each_service_connects_as_the_services_role_not_a_superuser(name: str, db_url: str) -> None:
    """The service's own sessions run as shouhu_service (login role, not a superuser), never as DATABASE_URL's owner."""
    from sqlalchemy import text

    app = _app(name, db_url)
    async with app.router.lifespan_context(app):
        async with app.state.sessionmaker() as session:
            who = (await session.execute(text(
                "SELECT current_user, session_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb"
                " FROM pg_roles r WHERE r.rolname = current_user"))).one()
    assert tuple(who) == ("shouhu_service", "shouhu_service", False, False, False)


async def test_readyz_reports_pending_migrations(db_url: str, sessionmaker, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    """A database behind the code's migrations is not ready (503), so no traffic reaches a stale schema."""
    from sqlalchemy import text

    from services.bot.app import create_app
    from services.bot.settings import BotSettings

    app = create_app(BotSettings(DATABASE_URL=db_url, SHOUHU_BOT_POLLING=False, SHOUHU_BOT_WORKER=False))
    async with app.router.lifespan_context(app):
        async with sessionmaker() as session, session.begin():  # the owner: the services may only read it
            await session.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {"status": "not ready"}
    assert "older" in capsys.readouterr().out  # the revisions are in the log, not in the answer


async def test_readyz_gives_no_database_error_text(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With the database unreachable /readyz answers 503 "not ready" only; the error goes to the log."""
    from shared.db import make_engine, make_sessionmaker, with_database

    app = _app("callcenter", db_url)
    missing = with_database(db_url, "shouhu_no_such_database")
    engine = make_engine(missing, pool_size=1)
    async with app.router.lifespan_context(app):
        app.state.sessionmaker = make_sessionmaker(engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            ready = await client.get("/readyz")
    await engine.dispose()
    assert ready.status_code == 503 and ready.text == '{"status":"not ready"}'
    assert "shouhu_no_such_database" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["dispatcher", "bot", "callcenter"])
async def test_every_response_says_nosniff_and_pages_carry_a_content_security_policy(name: str, db_url: str) -> None:
    """JSON gets nosniff and a deny-all policy; HTML pages (consoles, API docs) cannot be framed or run foreign scripts."""
    app = _app(name, db_url)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            health = await client.get("/healthz")
            assert health.headers["x-content-type-options"] == "nosniff"
            assert health.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
            pages = ["/docs"] + (["/console/sign-in"] if name != "bot" else [])
            for path in pages:
                page = await client.get(path)
                assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
                policy = page.headers["content-security-policy"]
                assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, path
                assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
            if name != "bot":
                policy = (await client.get("/console/sign-in")).headers["content-security-policy"]
                assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style-src")[0]
                static = await client.get("/console/static/console.js")
                assert static.headers["x-content-type-options"] == "nosniff"


def test_phone_and_id_numbers_are_masked_in_logs() -> None:
    """Personal numbers never reach a log sink in clear, in fields or inside messages."""
    event = mask_personal_data(None, "info", {
        "event": "calling 13800138000 about 330106199001011234",
        "phone": "+8613800138000",
        "payload": {"phone": "+86 138 0013 8000", "id_number": "330106199001011234", "tier": "high"},
    })
    text = json.dumps(event, ensure_ascii=False)
    for secret in ("13800138000", "0013 8000", "330106199001011234"):
        assert secret not in text
    assert event["payload"]["tier"] == "high"
    assert "8000" in event["phone"]  # the last digits stay, so an operator can still tell records apart


def test_foreign_numbers_landlines_and_old_ids_are_masked_in_the_json_log(capsys: pytest.CaptureFixture[str]) -> None:
    """+44, +852, a Hangzhou landline, a number written without its +, and both ID formats: none in clear."""
    configure_logging("INFO", json=True)
    secrets = {"+44 20 7946 0958": "0958", "+852 9123 4567": "4567", "0571-8700 0001": "0001",
               "447911123456": "3456", "330106199001011234": "1234", "33010619900101123X": "123X",
               "330106900101123": "1123"}
    try:
        structlog.get_logger("t").info(
            "call.placed " + " / ".join(secrets), phone="+852 9123 4567", to="0571 87000001",
            seat_phone="+442079460958", note=f"call back on {list(secrets)[0]}", id_number="330106900101123",
            task_id="01a23b8c-7b4c-7001-9cdd-5a21b4d3a955", amount_at_risk="80000000", at="2026-11-21T10:02:00+08:00")
    finally:
        structlog.contextvars.clear_contextvars()
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    line = json.loads(raw)
    digits = "".join(ch for ch in raw if ch.isdigit())
    for secret, tail in secrets.items():
        assert secret not in raw and "".join(ch for ch in secret if ch.isdigit()) not in digits, secret
        assert tail in line["event"]  # masked, not removed: the last four stay
    assert "7946" not in raw and "9123" not in raw and "8700" not in raw
    assert line["phone"] == "+852****4567" and line["to"] == "+86571****0001" and line["seat_phone"] == "+4420****0958"
    # What is not a number stays readable.
    assert (line["task_id"], line["amount_at_risk"], line["at"]) == (
        "01a23b8c-7b4c-7001-9cdd-5a21b4d3a955", "80000000", "2026-11-21T10:02:00+08:00")


def test_logs_are_json_with_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """A log line is one JSON object carrying the bound request id and masked numbers."""
    configure_logging("INFO", json=True)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        structlog.get_logger("t").info("alert.sent", phone="+8613800138000")
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["request_id"] == "req-1" and line["event"] == "alert.sent"
    assert "13800138000" not in line["phone"]


async def test_business_metrics_count_warnings_by_tier(dispatcher) -> None:
    """/metrics exports warnings by result and tier, so dashboards need no database query."""
    from tests.conftest import warning

    await dispatcher.client.post("/v1/warnings", json=warning(signal="screen_sharing"),
                                 headers=await dispatcher.headers())
    text = (await dispatcher.client.get("/metrics")).text
    line = next(row for row in text.splitlines() if row.startswith('shouhu_warnings_total{status="accepted",tier="high"}'))
    assert float(line.split()[-1]) >= 1


async def test_an_exhausted_connection_pool_answers_503_with_retry_after() -> None:
    """When every database connection is busy, callers get a retryable 503, not a 500."""
    from fastapi import FastAPI
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from shared.web import install_common

    app = FastAPI()
    install_common(app, service="test")

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await client.get("/busy")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
