"""What every service exposes: health, readiness (database and migrations), metrics; masked JSON logs."""

from __future__ import annotations

import json

import httpx
import pytest
import structlog

from shared.logging import configure_logging, mask_personal_data


@pytest.mark.parametrize("name", ["dispatcher", "bot", "callcenter"])
async def test_health_ready_and_metrics(name: str, db_url: str) -> None:
    """/healthz answers, /readyz checks the database is at the migration head, /metrics is Prometheus text."""
    import importlib

    module = importlib.import_module(f"services.{name}.app")
    settings_module = importlib.import_module(f"services.{name}.settings")
    settings_cls = next(v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "CommonSettings")
    app = module.create_app(settings_cls(DATABASE_URL=db_url, SHOUHU_DISPATCHER_WORKER=False,
                                         SHOUHU_BOT_POLLING=False, SHOUHU_BOT_WORKER=False,
                                         SHOUHU_CALLCENTER_WORKER=False))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            assert (await client.get("/healthz")).json()["status"] == "ok"
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            metrics = await client.get("/metrics")
            assert "shouhu_http_requests_total" in metrics.text
            assert (await client.get("/healthz")).headers["x-request-id"]


async def test_readyz_reports_pending_migrations(db_url: str) -> None:
    """A database behind the code's migrations is not ready (503), so no traffic reaches a stale schema."""
    from sqlalchemy import text

    from services.bot.app import create_app
    from services.bot.settings import BotSettings

    app = create_app(BotSettings(DATABASE_URL=db_url, SHOUHU_BOT_POLLING=False, SHOUHU_BOT_WORKER=False))
    async with app.router.lifespan_context(app):
        async with app.state.sessionmaker() as session, session.begin():
            await session.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "migrations pending"


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
