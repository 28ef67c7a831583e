"""Warning ingest: answers, idempotency, normalisation, validation, batches."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.conftest import warning


async def count(dispatcher, table: str) -> int:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        return (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def test_new_warning_is_graded_with_due_time_and_reasons(dispatcher) -> None:
    """A new record answers 201 with ids, tier, due time and the rules that decided the tier."""
    resp = await dispatcher.client.post("/v1/warnings", json=warning(signal="transfer_in_progress"),
                                        headers=await dispatcher.headers())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["tier"] == "high"
    assert body["merged"] is False
    assert body["due_at"].startswith("2026-11-21T04:00:00")  # 2 h after receipt
    assert {"warning_id", "case_id", "task_id"} <= set(body)
    assert body["reasons"][0] == {"rule": "signal", "effect": "high",
                                  "why": "signal transfer_in_progress suggests high"}


async def test_replay_answers_200_with_the_original_answer_and_stores_nothing(dispatcher) -> None:
    """The same (source, source_ref) again is a replay: same ids, 200, no second warning or task."""
    record = warning()
    headers = await dispatcher.headers()
    first = await dispatcher.client.post("/v1/warnings", json=record, headers=headers)
    second = await dispatcher.client.post("/v1/warnings", json=record, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    for key in ("warning_id", "case_id", "task_id", "tier", "due_at", "reasons"):
        assert first.json()[key] == second.json()[key]
    assert await count(dispatcher, "warnings") == 1
    assert await count(dispatcher, "tasks") == 1


async def test_phone_written_three_ways_is_one_person(dispatcher) -> None:
    """`138 0013 8000`, `+86-138-0013-8000` and `008613800138000` land in one case."""
    headers = await dispatcher.headers()
    answers = []
    for phone in ("138 0013 8000", "+86-138-0013-8000", "008613800138000"):
        resp = await dispatcher.client.post("/v1/warnings", json=warning(phone=phone), headers=headers)
        assert resp.status_code == 201, resp.text
        answers.append(resp.json())
    assert len({a["case_id"] for a in answers}) == 1
    assert [a["merged"] for a in answers] == [False, True, True]
    async with dispatcher.sessionmaker() as session:
        phones = (await session.execute(text("SELECT DISTINCT phone FROM warnings"))).scalars().all()
    assert phones == ["+8613800138000"]


async def test_invalid_record_is_422_naming_each_field_and_stores_nothing(dispatcher) -> None:
    """Bad input names the field and the reason, and leaves no row behind."""
    resp = await dispatcher.client.post(
        "/v1/warnings", json=warning(phone="12345", region_code="990101", risk_score=130),
        headers=await dispatcher.headers())
    assert resp.status_code == 422
    fields = {e["field"]: e["reason"] for e in resp.json()["errors"]}
    assert "phone" in fields and "valid" in fields["phone"]
    assert "region_code" in fields and "province" in fields["region_code"]
    assert "risk_score" in fields
    assert await count(dispatcher, "warnings") == 0
    assert await count(dispatcher, "audit_log") == 0


async def test_missing_field_and_future_time_are_named(dispatcher) -> None:
    """A missing required field and an occurred_at in the future are each reported by name."""
    headers = await dispatcher.headers()
    record = warning()
    del record["signal"]
    resp = await dispatcher.client.post("/v1/warnings", json=record, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "signal"
    resp = await dispatcher.client.post("/v1/warnings", json=warning(occurred_at="2027-01-01T00:00:00+08:00"),
                                        headers=headers)
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"field": "occurred_at",
                                      "reason": "must not be more than 5 minutes in the future"}]


async def test_unknown_codes_are_accepted_as_other_with_a_warning(dispatcher) -> None:
    """An unknown fraud type or signal is stored as `other` and the answer says so."""
    resp = await dispatcher.client.post("/v1/warnings", json=warning(fraud_type="crypto_airdrop", signal="weird"),
                                        headers=await dispatcher.headers())
    assert resp.status_code == 201
    notes = resp.json()["warnings"]
    assert any("crypto_airdrop" in n and "'other'" in n for n in notes)
    assert any("weird" in n for n in notes)
    async with dispatcher.sessionmaker() as session:
        row = (await session.execute(text("SELECT fraud_type, signal FROM warnings"))).one()
    assert tuple(row) == ("other", "other")


async def test_batch_with_good_bad_and_duplicate_records(dispatcher) -> None:
    """One bad record never blocks the others; results come back one per record, in order."""
    headers = await dispatcher.headers()
    good = warning(phone="13900000001")
    stored = warning(phone="13900000002")
    await dispatcher.client.post("/v1/warnings", json=stored, headers=headers)
    batch = [good, warning(phone="not a phone"), stored, "not an object", dict(good)]
    resp = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": batch}, headers=headers)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "duplicate", "rejected", "duplicate"]
    assert results[1]["errors"][0]["field"] == "phone"
    assert results[4]["warning_id"] == results[0]["warning_id"]
    assert resp.json()["accepted"] == 1 and resp.json()["rejected"] == 2
    assert await count(dispatcher, "warnings") == 2


async def test_batch_over_1000_records_is_refused(dispatcher) -> None:
    """A batch is capped at 1,000 records, with the field named."""
    resp = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [warning()] * 1001},
                                        headers=await dispatcher.headers())
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "warnings"


async def test_concurrent_warnings_for_one_person_make_one_case(dispatcher) -> None:
    """Twenty warnings for one phone at the same moment make one case and one task (the database decides)."""
    headers = await dispatcher.headers()
    replies = await asyncio.gather(*(
        dispatcher.client.post("/v1/warnings/batch", json={"warnings": [warning(phone="13700000007")]},
                               headers=headers)
        for _ in range(20)))
    assert all(r.status_code == 200 for r in replies)
    results = [r.json()["results"][0] for r in replies]
    assert len({r["case_id"] for r in results}) == 1
    assert sum(not r["merged"] for r in results) == 1
    assert await count(dispatcher, "cases") == 1
    assert await count(dispatcher, "tasks") == 1
    assert await count(dispatcher, "warnings") == 20


async def test_replay_inside_a_batch_and_alone_answers_with_stored_ids(dispatcher) -> None:
    """A replay answered from stored rows (not from this request) carries the same ids, in both routes."""
    headers = await dispatcher.headers()
    record = warning()
    first = (await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [record]}, headers=headers)).json()
    again = await dispatcher.client.post("/v1/warnings", json=record, headers=headers)
    assert again.status_code == 200
    assert again.json()["task_id"] == first["results"][0]["task_id"]
    batch = (await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [record]}, headers=headers)).json()
    assert batch["results"][0]["status"] == "duplicate"
    assert batch["results"][0]["warning_id"] == first["results"][0]["warning_id"]


async def test_batch_body_errors_name_the_field(dispatcher) -> None:
    """A body that is not JSON, or has no `warnings` list, is a 422 naming what is wrong."""
    headers = {**await dispatcher.headers(), "Content-Type": "application/json"}
    resp = await dispatcher.client.post("/v1/warnings/batch", content=b"{nope", headers=headers)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "body"
    resp = await dispatcher.client.post("/v1/warnings/batch", json={"records": []}, headers=headers)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "warnings"
