"""Targeted publicity campaigns (精准宣防), dispatcher side: segments counted by hand, scope, validation, scheduling
once, cancelling, and the console's CSRF rule. Delivery through the bot is in tests/bot/test_campaign_delivery.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import text

from services.dispatcher.campaigns.service import CHUNK
from shared import contracts
from tests.conftest import T0, console_sign_in, warning

NOW = T0 + timedelta(days=40)  # "recent" warnings arrive now; the old ones at T0, 40 days earlier

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(birth: str, region: str = "330106", seq: str = "123") -> str:
    """A valid 18-digit resident ID number (checksum included) for a birth date YYYYMMDD."""
    body = region + birth + seq
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]


async def bind(dispatcher, chat_id: int, phone: str, *, active: bool = True, lang: str = "zh") -> None:  # noqa: ANN001
    """A Telegram chat bound to a phone, as the bot writes it (active=False: /stop or blocked)."""
    async with dispatcher.sessionmaker() as session, session.begin():
        await session.execute(text("INSERT INTO bot_chats (chat_id, lang) VALUES (:c, :l)"), {"c": chat_id, "l": lang})
        await session.execute(text("INSERT INTO chat_bindings (chat_id, phone, lang, active) VALUES (:c, :p, :l, :a)"),
                              {"c": chat_id, "p": phone, "l": lang, "a": active})


@pytest.fixture
async def population(dispatcher) -> None:  # noqa: ANN001
    """Nine citizens; the clock ends at NOW (T0 + 40 days). Ages are on NOW's date, 2026-12-31.

    P1 330106 recent fake_investment, ID born 1956-05-20 (70)  bound
    P2 330102 recent task_brushing, age 22 given               bound
    P3 330106 old (T0) impersonating_police, age unknown       bound
    P4 330206 recent fake_investment, ID born 1991-03-02 (35)  bound
    P5 330106 recent fake_investment, age 68                   bound but inactive (blocked / stopped)
    P6 330106 recent fake_investment, age 40                   never bound
    P7 440106 recent fake_investment, ID born 1956-01-01 (70)  bound (another province)
    P8 (no warning at all)                                     bound: no known region, never counted
    P9 old 330106, latest (recent) 440106, age 30              bound: lives in 44 now
    """
    h = await dispatcher.headers("ingest", "")
    post = dispatcher.client.post

    async def warn(phone: str, region: str, fraud_type: str, subject: dict | None = None) -> None:
        resp = await post("/v1/warnings", json=warning(phone=phone, region_code=region, fraud_type=fraud_type,
                                                       subject=subject), headers=h)
        assert resp.status_code in (200, 201), resp.text

    await warn("13900000003", "330106", "impersonating_police")
    await warn("13900000009", "330106", "fake_investment", {"age": 30})
    dispatcher.clock.set(NOW)
    await warn("13900000001", "330106", "fake_investment", {"id_number": id_number("19560520")})
    await warn("13900000002", "330102", "task_brushing", {"age": 22})
    await warn("13900000004", "330206", "fake_investment", {"id_number": id_number("19910302", "330206")})
    await warn("13900000005", "330106", "fake_investment", {"age": 68})
    await warn("13900000006", "330106", "fake_investment", {"age": 40})
    await warn("13900000007", "440106", "fake_investment", {"id_number": id_number("19560101", "440106")})
    await warn("13900000009", "440106", "task_brushing")
    for n in (1, 2, 3, 4, 7, 8, 9):
        await bind(dispatcher, 1000 + n, f"+861390000000{n}", lang="en" if n == 2 else "zh")
    await bind(dispatcher, 1005, "+8613900000005", active=False)


async def preview(dispatcher, unit: str = "33", **segment) -> int:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/campaigns/preview", json={"segment": segment},
                                        headers=await dispatcher.headers("supervisor", unit))
    assert resp.status_code == 200, resp.text
    return resp.json()["count"]


# ---- segments ---------------------------------------------------------------------------------------------

async def test_preview_counts_only_bound_active_chats_whose_latest_warning_is_in_the_region(
        dispatcher, population) -> None:  # noqa: ANN001
    """Unbound, inactive, region-less and moved-away citizens are never counted; the region narrows."""
    assert await preview(dispatcher) == 4  # P1 P2 P3 P4 (unit 33 by default)
    assert await preview(dispatcher, region_prefix="3301") == 3  # P1 P2 P3
    assert await preview(dispatcher, region_prefix="330106") == 2  # P1 P3 (P5 inactive, P6 unbound)
    assert await preview(dispatcher, region_prefix="3302") == 1  # P4
    assert await preview(dispatcher, unit="44") == 2  # P7, and P9 whose latest warning is there
    assert await preview(dispatcher, unit="") == 6  # nationwide: everyone bound, active and located


async def test_preview_age_band_uses_id_birth_dates_or_given_ages_and_leaves_out_unknown_ages(
        dispatcher, population) -> None:  # noqa: ANN001
    """Ages: ID birth date exact, a given age aged with its warning; unknown age is excluded once a band is set."""
    assert await preview(dispatcher, age_min=60) == 1  # P1 (70); P3 unknown is out
    assert await preview(dispatcher, age_max=40) == 2  # P2 (22), P4 (35)
    assert await preview(dispatcher, age_min=35, age_max=35) == 1  # P4 exactly
    assert await preview(dispatcher, age_min=0, age_max=130) == 3  # all with a known age: P3 still out
    assert await preview(dispatcher, unit="", age_min=65) == 2  # P1 and P7


async def test_preview_fraud_types_look_only_at_warnings_within_the_last_days(dispatcher, population) -> None:  # noqa: ANN001
    """A fraud type counts only from warnings received within `days`; several types match any of them."""
    assert await preview(dispatcher, fraud_types=["fake_investment"]) == 2  # P1 P4
    assert await preview(dispatcher, fraud_types=["impersonating_police"], days=30) == 0  # P3's is 40 days old
    assert await preview(dispatcher, fraud_types=["impersonating_police"], days=41) == 1
    assert await preview(dispatcher, fraud_types=["fake_investment", "task_brushing"], region_prefix="3301") == 2
    assert await preview(dispatcher, fraud_types=["fake_investment"], age_min=60, region_prefix="330106") == 1


# ---- scope and validation -----------------------------------------------------------------------------------

async def test_a_segment_outside_the_unit_is_403_and_another_units_campaign_is_404(dispatcher, population) -> None:  # noqa: ANN001
    """A city key cannot target or preview the province or another city, nor see or cancel their campaigns."""
    hz = await dispatcher.headers("supervisor", "3301")
    resp = await dispatcher.client.post("/v1/campaigns/preview", json={"segment": {"region_prefix": "33"}}, headers=hz)
    assert resp.status_code == 403 and "segment.region_prefix" in resp.json()["detail"]
    resp = await dispatcher.client.post("/v1/campaigns", headers=hz, json={
        "name": "x", "template": "fake_loan", "segment": {"region_prefix": "3302"}})
    assert resp.status_code == 403
    nb = await dispatcher.headers("supervisor", "3302")
    own = await dispatcher.client.post("/v1/campaigns", headers=nb, json={"name": "Ningbo", "template": "fake_loan"})
    assert own.status_code == 201, own.text
    campaign_id = own.json()["campaign_id"]
    assert (await dispatcher.client.get(f"/v1/campaigns/{campaign_id}", headers=hz)).status_code == 404
    assert (await dispatcher.client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=hz)).status_code == 404
    assert (await dispatcher.client.get("/v1/campaigns", headers=hz)).json()["items"] == []
    province = await dispatcher.headers("supervisor", "33")
    assert [c["name"] for c in (await dispatcher.client.get("/v1/campaigns", headers=province)).json()["items"]] == [
        "Ningbo"]
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar() == 1
    other_role = await dispatcher.headers("operator", "33")
    assert (await dispatcher.client.get("/v1/campaigns", headers=other_role)).status_code == 403


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x"}, "text"),
    ({"name": "x", "text": "   "}, "text"),
    ({"name": "x", "template": "fake_loan", "text": "also this"}, "text"),
    ({"name": "x", "text": "字" * 501}, "text"),
    ({"name": "x", "template": "no_such_template"}, "template"),
    ({"name": "", "template": "fake_loan"}, "name"),
    ({"name": "x", "template": "fake_loan", "segment": {"age_min": 60, "age_max": 20}}, "segment.age_max"),
    ({"name": "x", "template": "fake_loan", "segment": {"fraud_types": ["lottery"]}}, "segment.fraud_types[0]"),
    ({"name": "x", "template": "fake_loan", "segment": {"region_prefix": "33a"}}, "segment.region_prefix"),
    ({"name": "x", "template": "fake_loan", "send_at": "2026-11-01T10:00:00+08:00"}, "send_at"),
    ({"name": "x", "template": "fake_loan", "send_at": "2027-06-01T10:00:00+08:00"}, "send_at"),
])
async def test_invalid_campaigns_are_422_naming_the_field_and_nothing_is_stored(dispatcher, body, field) -> None:  # noqa: ANN001
    """Empty, doubled or too long messages, unknown templates, bad bands and times: 422 naming the field."""
    resp = await dispatcher.client.post("/v1/campaigns", json=body, headers=await dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 422, resp.text
    assert field in [e["field"] for e in resp.json()["errors"]]
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar() == 0


async def test_every_template_is_short_names_96110_and_asks_for_nothing(dispatcher) -> None:  # noqa: ANN001
    """Ready-made messages, both languages: the 96110 check, short, never asking for money, codes or links."""
    resp = await dispatcher.client.get("/v1/campaigns/templates", headers=await dispatcher.headers("supervisor", "33"))
    templates = resp.json()
    assert len(templates) >= 5
    for template in templates:
        for lang in ("zh", "en"):
            body = template["texts"][lang]
            assert "96110" in body and len(body) < 300
            for request in ("请提供", "请告诉", "请输入", "点击链接", "http", "please send", "please provide",
                            "click"):
                assert request not in body.lower()


# ---- scheduling, starting, cancelling ------------------------------------------------------------------------

SEND_KIND, START_KIND = contracts.CampaignChunk.KIND, contracts.CampaignStart.KIND


async def recipients(dispatcher, campaign_id: str) -> list[tuple[int, str]]:  # noqa: ANN001
    """The chats the dispatcher handed to the bot for this campaign (in its chunk jobs), with their languages."""
    return sorted((r["chat_id"], r["lang"]) for job in await dispatcher.jobs(kind=SEND_KIND)
                  if job["payload"]["campaign_id"] == campaign_id for r in job["payload"]["recipients"])


async def test_start_materialises_each_chat_once_even_when_scheduled_or_started_twice(dispatcher, population) -> None:  # noqa: ANN001
    """The same client_ref returns the first campaign; a second start job adds no recipient and no bot job."""
    headers = await dispatcher.headers("supervisor", "33")
    body = {"name": "Hangzhou elderly", "template": "elderly_health", "segment": {"region_prefix": "3301"},
            "client_ref": "form-1"}
    first = await dispatcher.client.post("/v1/campaigns", json=body, headers=headers)
    again = await dispatcher.client.post("/v1/campaigns", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["campaign_id"] == again.json()["campaign_id"]
    campaign_id = first.json()["campaign_id"]
    assert first.json()["preview_count"] == 3 and first.json()["status"] == "scheduled"
    assert len(await dispatcher.jobs(kind=START_KIND)) == 1

    await dispatcher.run_dispatcher_jobs()
    assert await recipients(dispatcher, campaign_id) == [(1001, "zh"), (1002, "en"), (1003, "zh")]
    jobs = await dispatcher.jobs(kind=SEND_KIND)
    assert [(j["queue"], [r["chat_id"] for r in j["payload"]["recipients"]]) for j in jobs] == [
        ("bot", [1001, 1002, 1003])]
    assert jobs[0]["priority"] > 90  # after every alert priority (0-90)

    # A start job run again (a retry, a duplicate) finds the campaign started and changes nothing.
    from shared.queue.service import enqueue
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [contracts.CampaignStart(campaign_id=campaign_id).job(run_at=dispatcher.clock.now())])
    await dispatcher.run_dispatcher_jobs()
    assert len(await recipients(dispatcher, campaign_id)) == 3
    assert len(await dispatcher.jobs(kind=SEND_KIND)) == 1
    detail = (await dispatcher.client.get(f"/v1/campaigns/{campaign_id}", headers=headers)).json()
    assert detail["status"] == "sending" and detail["report"]["total"] == 3 and detail["report"]["progress"] == 0


async def test_recipients_are_chunked_into_bot_jobs(dispatcher) -> None:  # noqa: ANN001
    """A large segment becomes one bot job per CHUNK recipients, each chat in exactly one job."""
    h = await dispatcher.headers("ingest", "")
    n = CHUNK + 7
    resp = await dispatcher.client.post("/v1/warnings/batch", headers=h, json={"warnings": [
        warning(phone=f"1370000{i:04d}") for i in range(n)]})
    assert resp.status_code in (200, 201, 207), resp.text
    for i in range(n):
        await bind(dispatcher, 5000 + i, f"+861370000{i:04d}")
    created = await dispatcher.client.post("/v1/campaigns", headers=await dispatcher.headers("supervisor", "33"),
                                           json={"name": "all", "template": "fake_investment"})
    assert created.json()["preview_count"] == n
    await dispatcher.run_dispatcher_jobs()
    chunks = [[r["chat_id"] for r in j["payload"]["recipients"]] for j in await dispatcher.jobs(kind=SEND_KIND)]
    assert [len(c) for c in chunks] == [CHUNK, 7]
    assert sorted(c for chunk in chunks for c in chunk) == list(range(5000, 5000 + n))


async def test_a_later_send_at_waits_and_cancelling_before_it_sends_nothing(dispatcher, population) -> None:  # noqa: ANN001
    """Nothing is materialised before send_at; a cancelled campaign never starts; cancelling twice is 409."""
    headers = await dispatcher.headers("supervisor", "33")
    later = (NOW + timedelta(hours=2)).isoformat()
    created = (await dispatcher.client.post("/v1/campaigns", headers=headers, json={
        "name": "tonight", "text": "今晚八点起，警惕冒充客服退款。", "send_at": later})).json()
    await dispatcher.run_dispatcher_jobs()
    assert await recipients(dispatcher, created["campaign_id"]) == []
    cancelled = await dispatcher.client.post(f"/v1/campaigns/{created['campaign_id']}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    dispatcher.clock.advance(hours=3)
    await dispatcher.run_dispatcher_jobs()
    assert await recipients(dispatcher, created["campaign_id"]) == []
    assert await dispatcher.jobs(kind=SEND_KIND) == []
    again = await dispatcher.client.post(f"/v1/campaigns/{created['campaign_id']}/cancel", headers=headers)
    assert again.status_code == 409


async def test_an_own_text_gets_the_96110_footer_and_everyone_gets_it_in_its_language(dispatcher) -> None:  # noqa: ANN001
    """An own text is sent as written (one language for all), with the header and the 96110 verification line."""
    created = (await dispatcher.client.post("/v1/campaigns", headers=await dispatcher.headers("supervisor", "33"),
                                            json={"name": "en", "text": "Beware of fake refunds.", "lang": "en"})).json()
    assert created["texts"]["zh"] == created["texts"]["en"]
    assert created["texts"]["en"].startswith("[Anti-fraud notice] Beware of fake refunds.")
    assert "96110" in created["texts"]["en"]
    assert created["lang"] == "en" and created["template"] is None


async def test_scheduling_and_cancelling_are_audited(dispatcher, population) -> None:  # noqa: ANN001
    """Who scheduled which segment and message, the start with its count, and who cancelled: in the audit log."""
    headers = await dispatcher.headers("supervisor", "3301")
    created = (await dispatcher.client.post("/v1/campaigns", headers=headers, json={
        "name": "a", "template": "fake_loan", "segment": {"age_min": 60}})).json()
    await dispatcher.run_dispatcher_jobs()
    await dispatcher.client.post(f"/v1/campaigns/{created['campaign_id']}/cancel", headers=headers)
    async with dispatcher.sessionmaker() as session:
        rows = (await session.execute(text(
            "SELECT action, actor, region_code, body FROM audit_log WHERE action LIKE 'campaign.%' ORDER BY seq"))).all()
    assert [r.action for r in rows] == ["campaign.scheduled", "campaign.started", "campaign.cancelled"]
    assert rows[0].actor.startswith("key:") and rows[0].region_code == "3301"
    assert '"age_min":60' in rows[0].body and '"preview_count":1' in rows[0].body
    assert '"recipients":1' in rows[1].body


# ---- the console's forms ----------------------------------------------------------------------------------------

async def console_session(dispatcher, unit: str = "33") -> str:  # noqa: ANN001
    """Sign in through the console's form over HTTP; return the page's CSRF token."""
    key = (await dispatcher.headers("supervisor", unit))["Authorization"].removeprefix("Bearer ")
    resp, csrf = await console_sign_in(dispatcher.client, key)
    assert resp.status_code == 303 and csrf, resp.text
    return csrf


async def test_console_post_without_the_csrf_token_is_403_and_creates_nothing(dispatcher, population) -> None:  # noqa: ANN001
    """A signed-in browser's form POST without (or with a wrong) token is refused; with it, it is scheduled."""
    token = await console_session(dispatcher)
    form = {"name": "csrf", "region_prefix": "3301", "choice": "template:fake_loan", "days": "90"}
    assert (await dispatcher.client.post("/console/campaigns", data=form)).status_code == 403
    assert (await dispatcher.client.post("/console/campaigns", data={**form, "csrf_token": "forged"})).status_code == 403
    assert (await dispatcher.client.post("/console/campaigns/preview", data=form)).status_code == 403
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar() == 0
    ok = await dispatcher.client.post("/console/campaigns", data={**form, "csrf_token": token})
    assert ok.status_code == 303 and re.match(r"^/console/campaigns/[0-9a-f-]{36}\?ok=scheduled$", ok.headers["location"])
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar() == 1


async def test_console_form_scope_and_errors_are_checked_on_the_server(dispatcher, population) -> None:  # noqa: ANN001
    """The console form gets the API's rules: a region outside the unit (403) and an empty own text (422)."""
    token = await console_session(dispatcher, unit="3301")
    base = {"csrf_token": token, "name": "x", "days": "90"}
    outside = await dispatcher.client.post("/console/campaigns", data={**base, "region_prefix": "3302",
                                                                        "choice": "template:fake_loan"})
    assert outside.status_code == 403 and 'data-error="region_prefix"' in outside.text
    empty = await dispatcher.client.post("/console/campaigns", data={**base, "region_prefix": "3301", "choice": "own",
                                                                      "text": "  "})
    assert empty.status_code == 422 and 'data-error="text"' in empty.text
    preview = await dispatcher.client.post("/console/campaigns/preview", headers={"HX-Request": "true"},
                                           data={**base, "region_prefix": "3301", "age_min": "60"})
    assert 'data-count="1"' in preview.text
    plain = await dispatcher.client.post("/console/campaigns/preview",  # no JavaScript: the whole form comes back
                                         data={**base, "region_prefix": "3301", "age_min": "60", "choice": "own"})
    assert plain.status_code == 200 and 'data-count="1"' in plain.text and 'id="campaign-form"' in plain.text
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM campaigns"))).scalar() == 0
    elsewhere = (await dispatcher.client.post("/v1/campaigns", headers=await dispatcher.headers("supervisor", "3302"),
                                              json={"name": "Ningbo", "template": "fake_loan"})).json()
    assert (await dispatcher.client.get(f"/console/campaigns/{elsewhere['campaign_id']}")).status_code == 404
    assert (await dispatcher.client.post(f"/console/campaigns/{elsewhere['campaign_id']}/cancel",
                                         data={"csrf_token": token})).status_code == 404
    assert "Ningbo" not in (await dispatcher.client.get("/console/campaigns")).text
