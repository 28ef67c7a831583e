"""Bad input at the edge of the three services (issue 11): 401 before the body, 422 naming the field, never a 500,
and an OpenAPI that documents every answer with the one error model."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from services.callcenter.app import create_app as create_callcenter
from services.callcenter.settings import CallcenterSettings
from services.dispatcher.app import create_app as create_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.auth.deps import API_PREFIX
from shared.web import ErrorBody, ValidationErrorBody, api_routes, route_auth
from tests.conftest import Sandbox, warning

SECRET = "edge-webhook-secret"


def _schema_only(service: str) -> FastAPI:
    """An app built only to read its OpenAPI (nothing is started)."""
    if service == "dispatcher":
        return create_dispatcher(DispatcherSettings(DATABASE_URL="postgresql://schema-only/none"))
    if service == "bot":
        return create_bot(BotSettings(DATABASE_URL="postgresql://schema-only/none"))
    return create_callcenter(CallcenterSettings(DATABASE_URL="postgresql://schema-only/none"))


def _invalid(resp: httpx.Response) -> ValidationErrorBody:
    """The 422 body, checked against the documented model."""
    assert resp.status_code == 422, (resp.status_code, resp.text)
    return ValidationErrorBody.model_validate(resp.json())


def _fields(resp: httpx.Response) -> set[str]:
    return {e.field for e in _invalid(resp).errors}


@pytest.fixture
async def services(db_url: str, sandbox: Sandbox) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The three services on one database (the bot in webhook mode), each behind an httpx client."""
    apps = {
        "dispatcher": create_dispatcher(DispatcherSettings(DATABASE_URL=db_url, SHOUHU_DISPATCHER_WORKER=False)),
        "bot": create_bot(BotSettings(DATABASE_URL=db_url, SHOUHU_BOT_WORKER=False, SHOUHU_BOT_POLLING=False,
                                      SHOUHU_BOT_PER_CHAT_INTERVAL_S=0,
                                      TELEGRAM_API_BASE=sandbox.base, TELEGRAM_WEBHOOK_SECRET=SECRET,
                                      TELEGRAM_WEBHOOK_URL="http://127.0.0.1:9/telegram/webhook")),
        "callcenter": create_callcenter(CallcenterSettings(DATABASE_URL=db_url, TWILIO_API_BASE=sandbox.base,
                                                           SHOUHU_CALLCENTER_WORKER=False)),
    }
    clients: dict[str, httpx.AsyncClient] = {}
    async with (apps["dispatcher"].router.lifespan_context(apps["dispatcher"]),
                apps["bot"].router.lifespan_context(apps["bot"]),
                apps["callcenter"].router.lifespan_context(apps["callcenter"])):
        for name, app in apps.items():
            clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
        try:
            yield clients
        finally:
            for client in clients.values():
                await client.aclose()


async def _key(client: httpx.AsyncClient, role: str, unit: str = "33") -> dict[str, str]:
    from shared.auth.service import create_key
    from shared.db import transaction

    app = client._transport.app  # type: ignore[attr-defined]
    async with transaction(app.state.sessionmaker) as session:
        _, full = await create_key(session, role=role, unit=unit, name=f"edge-{role}")
    return {"Authorization": f"Bearer {full}"}


def _concrete(path: str) -> str:
    """A route's path with its parameters filled in (ids as UUIDs, a phone as a phone)."""
    return path.replace("{phone}", "13800138000").replace("{", "").replace("}", "") \
        .replace("task_id", str(uuid.uuid4())).replace("visit_id", str(uuid.uuid4())) \
        .replace("campaign_id", str(uuid.uuid4())).replace("clue_id", str(uuid.uuid4()))


# ---- 401 before the body -----------------------------------------------------------------------------------

async def test_unauthenticated_malformed_json_gets_401_on_every_authenticated_route(services) -> None:  # noqa: ANN001
    """Every route that takes a key answers 401 to a request without one (or with a bad one), whatever its body."""
    tried = 0
    for name, client in services.items():
        app = client._transport.app  # type: ignore[attr-defined]
        for served in api_routes(app):
            if not route_auth(served.route)[0]:
                continue
            for method in served.methods:
                for auth in ({}, {"Authorization": "Bearer shk_0000000000_not-a-key-at-all-000000"}):
                    resp = await client.request(method, _concrete(served.path), content=b'{"note": "unterminated',
                                                headers={"Content-Type": "application/json", **auth})
                    assert resp.status_code == 401, (name, method, served.path, resp.status_code, resp.text)
                    ErrorBody.model_validate(resp.json())
                    tried += 1
    assert tried >= 2 * 30  # every authenticated route of the three services was tried


def test_api_routes_are_exactly_the_routes_that_take_a_key() -> None:
    """The 401-first middleware guards /v1/; every route there takes a key and none elsewhere does."""
    for service in ("dispatcher", "bot", "callcenter"):
        for served in api_routes(_schema_only(service)):
            assert route_auth(served.route)[0] == served.path.startswith(API_PREFIX), (service, served.path)


# ---- 422 naming the field, never a 500 -----------------------------------------------------------------------

@pytest.mark.parametrize("report", ["compliance", "ranking"])
async def test_naive_times_in_reports_get_422_naming_the_field(services, report: str) -> None:  # noqa: ANN001
    """A report's `from` or `to` without a time zone offset is refused naming the field (it was a 500)."""
    dispatcher = services["dispatcher"]
    headers = await _key(dispatcher, "supervisor")
    for field in ("from", "to"):
        query = {"from": "2026-11-01T00:00:00+08:00", "to": "2026-11-20T00:00:00+08:00", field: "2026-11-10T00:00:00"}
        resp = await dispatcher.get(f"/v1/reports/{report}", params=query, headers=headers)
        assert _fields(resp) == {field}
        assert "UTC offset" in _invalid(resp).detail


@pytest.mark.parametrize("path", ["/v1/reports/ranking", "/v1/reports/compliance", "/v1/audit"])
async def test_out_of_range_dates_in_filters_get_422(services, path: str) -> None:  # noqa: ANN001
    """Dates outside 2000-2100 in the ranking, compliance and audit filters are refused naming the field (were 500s)."""
    dispatcher = services["dispatcher"]
    headers = await _key(dispatcher, "supervisor")
    for value in ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
                  "1970-01-01T00:00:00Z", "2150-01-01T00:00:00+08:00"):
        for field in ("from", "to"):
            resp = await dispatcher.get(path, params={field: value}, headers=headers)
            assert _fields(resp) == {field}, (field, value, resp.text)


async def test_naive_callback_at_gets_422_naming_the_field(services) -> None:  # noqa: ANN001
    """A disposition's callback_at (or the loss's transferred_at) without an offset is a 422 naming it, not a 500."""
    callcenter = services["callcenter"]
    headers = await _key(callcenter, "operator")
    url = f"/v1/tasks/{uuid.uuid4()}/disposition"
    resp = await callcenter.post(url, json={"disposition": "callback", "callback_at": "2026-11-21T15:00:00"},
                                 headers=headers)
    assert _fields(resp) == {"callback_at"}
    resp = await callcenter.post(url, json={"disposition": "loss_reported",
                                            "loss": {"transferred_at": "2026-11-21T10:05:00"}}, headers=headers)
    assert _fields(resp) == {"loss.transferred_at"}
    resp = await callcenter.post(url, json={"disposition": "callback", "callback_at": "0001-01-01T00:00:00+08:00"},
                                 headers=headers)
    assert _fields(resp) == {"callback_at"}


async def test_control_characters_in_text_get_422_naming_the_field(services) -> None:  # noqa: ANN001
    """NUL (which PostgreSQL refuses: it was a 500) and other control characters in text are refused by name."""
    dispatcher, callcenter = services["dispatcher"], services["callcenter"]
    task = (await dispatcher.post("/v1/warnings", json=warning(), headers=await _key(dispatcher, "ingest"))).json()
    supervisor = await _key(dispatcher, "supervisor")
    for path, body, field in (
            ("/v1/tasks/{task}/feedback", {"outcome": "dissuaded", "note": "劝阻\x00成功"}, "note"),
            ("/v1/tasks/{task}/visits", {"note": "在银行\x1b[31m"}, "note"),
            ("/v1/tasks/{task}/reassign", {"to": "seats", "note": "\x7f"}, "note"),
            ("/v1/emergencies/{task}/payment-stop", {"bank": "工商\x00银行"}, "bank"),
            ("/v1/campaigns", {"name": "宣传\x00", "text": "请勿转账"}, "name")):
        resp = await dispatcher.post(path.format(task=task["task_id"]), json=body, headers=supervisor)
        assert _fields(resp) == {field}, path
        assert "control character" in _invalid(resp).detail
    resp = await callcenter.put("/v1/seat", json={"state": "paused", "reason": "培训\x00"},
                                headers=await _key(callcenter, "operator"))
    assert _fields(resp) == {"reason"}


async def test_control_characters_in_filters_get_422(services) -> None:  # noqa: ANN001
    """A NUL in a query filter (audit actor, clue or campaign status) is a 422 naming it, not a database 500."""
    dispatcher = services["dispatcher"]
    headers = await _key(dispatcher, "supervisor")
    for path, name in (("/v1/audit", "actor"), ("/v1/audit", "action"), ("/v1/clues", "status"),
                       ("/v1/campaigns", "status")):
        resp = await dispatcher.get(path, params={name: "a\x00b"}, headers=headers)
        assert _fields(resp) == {name}, path


async def test_an_audit_cursor_past_64_bits_gets_422(services) -> None:  # noqa: ANN001
    """An audit cursor PostgreSQL's bigint cannot hold is a 422 naming `cursor` (it was a 500)."""
    dispatcher = services["dispatcher"]
    headers = await _key(dispatcher, "supervisor")
    for cursor in (str(2**63), "99999999999999999999999", "-1"):
        assert _fields(await dispatcher.get("/v1/audit", params={"cursor": cursor}, headers=headers)) == {"cursor"}


async def test_unreadable_bodies_and_field_422s_share_the_documented_model(services) -> None:  # noqa: ANN001
    """A body that is not UTF-8 (FastAPI's 400), a route's own field check and a bad cursor: one 422 model."""
    dispatcher, callcenter = services["dispatcher"], services["callcenter"]
    supervisor = await _key(dispatcher, "supervisor")
    resp = await dispatcher.post(f"/v1/tasks/{uuid.uuid4()}/feedback", content=b'{"outcome": "\xff\xfe"}',
                                 headers={**supervisor, "Content-Type": "application/json"})
    assert _fields(resp) == {"body"}
    assert _fields(await dispatcher.get("/v1/tasks", params={"cursor": "not-a-cursor"}, headers=supervisor)) == {
        "cursor"}
    period = {"from": "2026-11-20T00:00:00+08:00", "to": "2026-11-01T00:00:00+08:00"}
    assert _fields(await dispatcher.get("/v1/reports/ranking", params=period, headers=supervisor)) == {"from"}
    operator = await _key(callcenter, "operator")
    assert _fields(await callcenter.get("/v1/tasks", params={"mine": "false"}, headers=operator)) == {"mine"}
    assert _fields(await callcenter.get("/v1/subjects/not-a-phone/history", headers=operator)) == {"phone"}
    assert _fields(await callcenter.put("/v1/seat", json={"state": "paused"}, headers=operator)) == {"reason"}


async def test_text_the_database_cannot_store_is_a_422_not_a_500(db_url: str) -> None:
    """The last line: a NUL no field check caught reaches PostgreSQL, which refuses it; the answer is a 422."""
    from sqlalchemy import text

    from shared.db import make_engine, make_sessionmaker
    from shared.web import install_common

    engine = make_engine(db_url, pool_size=1)
    app = FastAPI()
    install_common(app, service="edge-test")

    @app.post("/echo")
    async def echo(value: str) -> dict[str, str]:
        async with make_sessionmaker(engine)() as session:
            return {"value": (await session.execute(text("SELECT CAST(:v AS text)"), {"v": value})).scalar_one()}

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
            assert (await client.post("/echo", params={"value": "ok"})).json() == {"value": "ok"}
            assert _fields(await client.post("/echo", params={"value": "a\x00b"})) == {"body"}
    finally:
        await engine.dispose()


# ---- the Twilio webhooks (signed, not in the OpenAPI) -----------------------------------------------------------

TWILIO_PATHS = ["/twilio/voice", "/twilio/gather", "/twilio/status", "/twilio/bridge", "/twilio/dial-status",
                "/twilio/silence", "/twilio/transfer-end", "/twilio/transfer-next", "/twilio/transfer-leg"]


async def test_forged_twilio_webhooks_with_garbage_bodies_get_403(services) -> None:  # noqa: ANN001
    """Unsigned or wrongly signed Twilio webhooks get 403 whatever their body (broken multipart, not UTF-8, JSON)."""
    for path, (content_type, body) in itertools.product(TWILIO_PATHS, (
            ("multipart/form-data; boundary=zz", b"--zz\r\nbroken"),
            ("application/x-www-form-urlencoded", b"%%%=&&\xff"), ("application/json", b'{"x":'))):
        for signature in ({}, {"X-Twilio-Signature": "AAAA"}):
            resp = await services["callcenter"].post(f"{path}?attempt=1&transfer=1&seat=k", content=body,
                                                     headers={"Content-Type": content_type, **signature})
            assert resp.status_code == 403, (path, content_type, resp.status_code)


async def test_signed_twilio_webhooks_with_impossible_ids_never_500(services) -> None:  # noqa: ANN001
    """A correctly signed webhook whose ids cannot exist (past bigint, a NUL seat) is refused or ignored, never a 500."""
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    settings = CallcenterSettings()  # the sandbox's auth token and public URL, as the fixture's callcenter has
    form = {"CallStatus": "completed", "Digits": "1"}
    queries = ({"attempt": str(2**63)}, {"attempt": "1", "transfer": str(2**63), "seat": "k"},
               {"attempt": "1", "transfer": "1", "seat": "\x00"})
    for path, query in itertools.product(TWILIO_PATHS, queries):
        signature = RequestValidator(settings.auth_token()).compute_signature(
            f"{settings.public_url}{path}?{urlencode(query)}", form)
        resp = await services["callcenter"].post(path, params=query, data=form,
                                                 headers={"X-Twilio-Signature": signature})
        assert resp.status_code < 500, (path, query, resp.status_code, resp.text)
        if path in ("/twilio/voice", "/twilio/gather") and int(query["attempt"]) >= 2**63:
            assert _fields(resp) == {"attempt"}


# ---- the Telegram webhook -------------------------------------------------------------------------------------

async def _chat_count(client: httpx.AsyncClient) -> int:
    from sqlalchemy import text

    app = client._transport.app  # type: ignore[attr-defined]
    async with app.state.sessionmaker() as session:
        return (await session.execute(text("SELECT count(*) FROM chat_bindings"))).scalar_one()


async def test_forged_webhook_gets_401_and_changes_nothing(services) -> None:  # noqa: ANN001
    """A missing, wrong or non-ASCII secret header (a 500 before) is a 401, and the update is not read."""
    bot = services["bot"]
    update = {"update_id": 1, "message": {"message_id": 1, "date": 1795000000, "text": "/start",
                                          "chat": {"id": 4242, "type": "private"}}}
    before = await _chat_count(bot)
    for secret in (None, b"", b"wrong", "秘密".encode(), b"\xff\x00edge", "é".encode("latin-1"),
                   SECRET.encode() + b"\xe9", SECRET.upper().encode()):
        headers = [(b"content-type", b"application/json")]
        if secret is not None:
            headers.append((b"x-telegram-bot-api-secret-token", secret))
        resp = await bot.post("/telegram/webhook", json=update, headers=headers)
        assert resp.status_code == 401, (secret, resp.text)
        ErrorBody.model_validate(resp.json())
    assert await _chat_count(bot) == before


async def test_malformed_telegram_update_gets_422(services) -> None:  # noqa: ANN001
    """An update that is not one (not JSON, not an object, wrong types) is a 422 naming the field, never a 500."""
    for body, field in (
            (b'{"update_id": 1, "message": ', "body"), (b"\xff", "body"), (b"[1, 2]", "body"), (b"null", "body"),
            (b'{"message": {"text": "hi"}}', "update_id"), (b'{"update_id": "7"}', "update_id"),
            (b'{"update_id": 7, "message": {"message_id": "x", "date": 0, "chat": {"id": 1, "type": "private"}}}',
             "message.message_id"),
            (b'{"update_id": 7, "callback_query": 5}', "callback_query")):
        resp = await services["bot"].post("/telegram/webhook", content=body, headers={
            "X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"})
        assert field in _fields(resp), (body, resp.text)


async def test_webhook_ignores_unknown_updates_and_survives_failing_handlers(services) -> None:  # noqa: ANN001
    """An update of no known kind is 200 and ignored; one whose reply Telegram refuses is 200, logged, not a 500."""
    bot = services["bot"]
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    resp = await bot.post("/telegram/webhook", json={"update_id": 5, "future_kind": {"x": 1}}, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"ok": True, "handled": False}
    # The sandbox has no chat 4242: the /start reply fails there as it would at Telegram for a deleted chat.
    update = {"update_id": 6, "message": {"message_id": 1, "date": 1795000000, "text": "/start",
                                          "chat": {"id": 4242, "type": "private"}}}
    resp = await bot.post("/telegram/webhook", json=update, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"ok": True, "handled": False}


# ---- the OpenAPI is the truth ---------------------------------------------------------------------------------

ERROR_REF = "#/components/schemas/ErrorBody"
INVALID_REF = "#/components/schemas/ValidationErrorBody"


@pytest.mark.parametrize("service", ["dispatcher", "bot", "callcenter"])
def test_every_operation_documents_its_errors_with_the_one_model(service: str) -> None:
    """Every operation documents 401/403/422/503 where it can answer them, each error with the one shared model."""
    app = _schema_only(service)
    schema = app.openapi()
    routes = {(served.path, m.lower()): served.route for served in api_routes(app) for m in served.methods}
    assert schema["components"]["schemas"]["ValidationErrorBody"]["required"] == ["detail", "errors"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    operations = 0
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            operations += 1
            responses = operation["responses"]
            needs_key, checks_role = route_auth(routes[(path, method)])
            expected = {"503"} | ({"401"} if needs_key else set()) | ({"403"} if checks_role else set())
            if operation.get("parameters") or operation.get("requestBody"):
                expected.add("422")
            assert expected <= set(responses), (path, method, sorted(responses))
            if needs_key:
                assert operation["security"] == [{"bearerKey": []}], (path, method)
            for status, response in responses.items():
                if status[0] in "45":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    if status != "422" and ref != ERROR_REF:  # an ErrorBody with more to say (a 409's `held`)
                        extended = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
                        assert "detail" in extended.get("required", []), (path, method, status, ref)
                        continue
                    assert ref == (INVALID_REF if status == "422" else ERROR_REF), (path, method, status)
    assert operations >= {"dispatcher": 27, "bot": 1, "callcenter": 6}[service]


@pytest.mark.parametrize("service", ["dispatcher", "bot", "callcenter"])
async def test_the_served_openapi_is_the_documented_one(service: str) -> None:
    """/openapi.json serves the schema with the error model and security schemes, not FastAPI's default."""
    app = _schema_only(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        served = (await client.get("/openapi.json")).json()
    assert served == app.openapi()
    assert {"ErrorBody", "ValidationErrorBody"} <= set(served["components"]["schemas"])


def test_bot_openapi_lists_the_webhook() -> None:
    """The bot's OpenAPI has the Telegram webhook: its body, its secret header, 200, 401 and 422."""
    schema = _schema_only("bot").openapi()
    webhook = schema["paths"]["/telegram/webhook"]["post"]
    assert {"200", "401", "422"} <= set(webhook["responses"])
    assert webhook["requestBody"]["content"]["application/json"]["schema"]["required"] == ["update_id"]
    assert webhook["security"] == [{"telegramSecret": []}]
    assert schema["components"]["securitySchemes"]["telegramSecret"]["name"] == "X-Telegram-Bot-Api-Secret-Token"


def test_error_models_refuse_other_shapes() -> None:
    """The documented 422 model is the one sent, not FastAPI's default (`detail` a list) it replaced."""
    ValidationErrorBody.model_validate({"detail": "from: must be before to",
                                        "errors": [{"field": "from", "reason": "must be before to"}]})
    with pytest.raises(ValidationError):
        ValidationErrorBody.model_validate({"detail": [{"loc": ["body"], "msg": "Field required", "type": "missing"}]})
