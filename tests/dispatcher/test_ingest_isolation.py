"""One bad record never costs its neighbours: refused at the edge, or split off the group commit and answered alone."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from tests.conftest import warning

# Every text field a warning has, and where a NUL goes in it; the answer must name that field.
NUL_PLACES = {
    "source": {"source": "bank\u0000x"},
    "source_ref": {"source_ref": "ref\u0000"},
    "phone": {"phone": "138\u000000138000"},
    "fraud_type": {"fraud_type": "fake_loan\u0000"},
    "signal": {"signal": "\u0000other"},
    "region_code": {"region_code": "330\u0000106"},
    "occurred_at": {"occurred_at": "2026-11-21T09:55:00\u0000+08:00"},
    "amount_at_risk": {"amount_at_risk": "100\u0000"},
    "subject.name": {"subject": {"name": "张\u0000某"}},
    "subject.id_number": {"subject": {"id_number": "11010519491231002\u0000"}},
    "details": {"details": {"memo": "transfer\u0000now"}},
}


async def count(dispatcher, table: str, where: str = "true") -> int:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        return (await session.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar_one()


async def poison_source_ref(dispatcher, source_ref: str) -> None:  # noqa: ANN001
    """Make PostgreSQL refuse, at INSERT, a warning that passes every check of the API (a real database error).

    DDL needs the database's owner (the services connect as a role that may not create triggers).
    """
    from shared.db import make_engine, make_sessionmaker
    from tests.conftest import TEST_AUDIT_KEY

    owner = make_engine(dispatcher.db_url, pool_size=1, audit_key=TEST_AUDIT_KEY)
    try:
        async with make_sessionmaker(owner)() as session, session.begin():
            await _create_poison_trigger(session, source_ref)
    finally:
        await owner.dispose()


async def _create_poison_trigger(session, source_ref: str) -> None:  # noqa: ANN001
    await session.execute(text(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.source_ref = '{source_ref}' THEN"
        "   RAISE EXCEPTION 'poisoned record refused by a test trigger' USING ERRCODE = 'check_violation';"
        " END IF; RETURN NEW; END $$"))
    await session.execute(text("CREATE TRIGGER refuse_poison BEFORE INSERT ON warnings FOR EACH ROW"
                               " EXECUTE FUNCTION refuse_poison()"))


@pytest.mark.parametrize("field", sorted(NUL_PLACES))
async def test_nul_in_any_text_field_is_a_422_naming_that_field(dispatcher, field: str) -> None:
    """A NUL byte anywhere is refused with the field named, alone and in a batch, and nothing is stored."""
    headers = await dispatcher.headers()
    resp = await dispatcher.client.post("/v1/warnings", json=warning(**NUL_PLACES[field]), headers=headers)
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == [field]
    batch = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [warning(**NUL_PLACES[field])]},
                                         headers=headers)
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["status"] == "rejected"
    assert [e["field"] for e in batch.json()["results"][0]["errors"]] == [field]
    assert await count(dispatcher, "warnings") == 0


@pytest.mark.parametrize("bad", ["\u001b[31m", "\u007f", "\u0085", "\u202e", "\u2028"])
async def test_other_control_and_reordering_characters_are_refused_by_name(dispatcher, bad: str) -> None:
    """Escape sequences, DEL, C1 controls, bidi overrides and line separators are refused in one-line fields."""
    resp = await dispatcher.client.post("/v1/warnings", json=warning(subject={"name": f"张{bad}某"}),
                                        headers=await dispatcher.headers())
    assert resp.status_code == 422, resp.text
    error = resp.json()["errors"][0]
    assert error["field"] == "subject.name" and f"U+{ord(bad[0]):04X}" in error["reason"]


async def test_fifty_concurrent_posts_and_a_nul_one_store_all_fifty(dispatcher) -> None:
    """50 valid single POSTs and one NUL POST at once: 50 stored (201 each, their own ids), the bad one 422."""
    headers = await dispatcher.headers()
    records = [warning(phone=f"1390000{i:04d}", source_ref=f"ok-{i}") for i in range(50)]
    records.insert(25, warning(phone="13900009999", source_ref="bad", details={"memo": "a\u0000b"}))
    replies = await asyncio.gather(*(dispatcher.client.post("/v1/warnings", json=r, headers=headers)
                                     for r in records))
    codes = [r.status_code for r in replies]
    assert codes.count(201) == 50 and codes[25] == 422, codes
    assert replies[25].json()["errors"][0]["field"] == "details"
    async with dispatcher.sessionmaker() as session:
        stored = dict((await session.execute(text("SELECT id::text, source_ref FROM warnings"))).all())
    # Each caller got its own record's answer.
    assert {stored[r.json()["warning_id"]] for r in replies if r.status_code == 201} == {f"ok-{i}" for i in range(50)}
    assert await count(dispatcher, "tasks") == 50


async def test_batch_of_nine_good_and_one_nul_stores_the_nine(dispatcher) -> None:
    """A batch of 9 good records and 1 with a NUL: 9 accepted and stored, the bad one rejected with its errors."""
    records = [warning(phone=f"1390000{i:04d}") for i in range(9)]
    records.insert(4, warning(source="bank\u0000"))
    resp = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": records},
                                        headers=await dispatcher.headers())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["status"] for r in body["results"]] == ["accepted"] * 4 + ["rejected"] + ["accepted"] * 5
    assert body["results"][4]["errors"][0]["field"] == "source"
    assert (body["accepted"], body["rejected"]) == (9, 1)
    assert await count(dispatcher, "warnings") == 9


async def test_a_record_failing_at_commit_in_the_group_commit_is_answered_alone(dispatcher) -> None:
    """A record the database refuses, posted among 50 concurrent ones, is split off: 50 stored, it alone is 422."""
    await poison_source_ref(dispatcher, "poison")
    headers = await dispatcher.headers()
    records = [warning(phone=f"1390000{i:04d}", source_ref=f"ok-{i}") for i in range(50)]
    records.insert(30, warning(phone="13900009999", source_ref="poison"))
    with capture_logs() as logs:
        replies = await asyncio.gather(*(dispatcher.client.post("/v1/warnings", json=r, headers=headers)
                                         for r in records))
    codes = [r.status_code for r in replies]
    assert codes.count(201) == 50 and codes[30] == 422, codes
    error = replies[30].json()["errors"][0]
    assert error["field"] == "record" and "poisoned record refused" in error["reason"] and "23514" in error["reason"]
    # It failed a shared transaction (the group commit), which was split until it stood alone.
    splits = [e for e in logs if e["event"] == "ingest.isolating"]
    assert splits and max(e["records"] for e in splits) > 1
    async with dispatcher.sessionmaker() as session:
        stored = dict((await session.execute(text("SELECT id::text, source_ref FROM warnings"))).all())
    assert {stored[r.json()["warning_id"]] for r in replies if r.status_code == 201} == {f"ok-{i}" for i in range(50)}
    assert await count(dispatcher, "cases") == 50
    assert await count(dispatcher, "cases", "phone = '+8613900009999'") == 0  # no half-stored case


async def test_a_record_failing_at_commit_in_a_batch_leaves_the_rest_stored_in_order(dispatcher) -> None:
    """In a batch, the refused record is `rejected` alone; the others commit, one person's warnings in one case."""
    await poison_source_ref(dispatcher, "poison")
    records = [warning(phone="13900000001", source_ref=f"p-{i}") for i in range(6)]
    records += [warning(phone=f"1390000{i:04d}", source_ref=f"q-{i}") for i in range(10, 13)]
    records.insert(3, warning(phone="13900000001", source_ref="poison", signal="transfer_in_progress"))
    resp = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": records},
                                        headers=await dispatcher.headers())
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results].count("accepted") == 9
    assert results[3]["status"] == "rejected" and results[3]["errors"][0]["field"] == "record"
    assert len({r["case_id"] for r in results[:3] + results[4:7]}) == 1
    assert [r["merged"] for r in results[:3] + results[4:7]] == [False] + [True] * 5
    assert await count(dispatcher, "warnings") == 9
    assert await count(dispatcher, "cases", "phone = '+8613900000001' AND warning_count = 6") == 1


async def test_import_reports_the_same_errors_line_by_line(dispatcher, tmp_path) -> None:  # noqa: ANN001
    """`shouhu import` refuses NUL, NaN, year 1, bad bytes and broken JSON per line, with the API's field and reason."""
    from tests.dispatcher.test_cli import shouhu

    good = warning(phone="13900000001", source_ref="good")
    lines = [
        json.dumps(good),
        json.dumps(warning(source_ref="nul", subject={"name": "a\u0000"})),
        json.dumps(warning(source_ref="year1", occurred_at="0001-01-01T00:00:00+08:00")),
        json.dumps(warning(source_ref="nan", amount_at_risk="NaN")),
        json.dumps(warning(source_ref="deep", details={"a": [[[[[[[[["x"]]]]]]]]]})),
        '{"source": "bank", "amount_at_risk": NaN}',
    ]
    path = tmp_path / "warnings.jsonl"
    path.write_bytes("\n".join(lines).encode() + b'\n{"source": "bank\xff\xfe"}\n{"source": \n')
    done = shouhu(dispatcher.db_url, "import", str(path))
    assert done.returncode == 1, done.stderr
    assert "line 2: subject.name: must not contain a control character: U+0000" in done.stderr
    assert "line 3: occurred_at: must be between 2000-01-01" in done.stderr
    assert "line 4: amount_at_risk: Input should be a finite number" in done.stderr
    assert "line 5: details: at .a[0][0][0][0][0][0][0]: nested deeper than 8 levels" in done.stderr
    assert "line 6: amount_at_risk: Input should be a finite number" in done.stderr  # a NaN literal
    assert "line 7: source: Input should be a valid string" in done.stderr  # bytes that are not UTF-8
    assert "line 8: record: not valid JSON" in done.stderr
    assert "1 accepted, 0 duplicates, 7 rejected" in done.stderr
    assert await count(dispatcher, "warnings") == 1


async def test_import_reports_a_record_the_database_refuses_and_stores_its_batch(dispatcher, tmp_path) -> None:  # noqa: ANN001
    """A line PostgreSQL refuses at commit is reported with its line number; the rest of its batch is stored."""
    from tests.dispatcher.test_cli import shouhu

    await poison_source_ref(dispatcher, "poison")
    records = [warning(phone=f"1390000{i:04d}", source_ref=f"ok-{i}") for i in range(8)]
    records.insert(5, warning(source_ref="poison"))
    path = tmp_path / "warnings.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    done = shouhu(dispatcher.db_url, "import", str(path), "--batch-size", "50")
    assert done.returncode == 1, done.stderr
    assert "line 6: record: the database refused this record (23514" in done.stderr
    assert "8 accepted, 0 duplicates, 1 rejected" in done.stderr
    assert await count(dispatcher, "warnings") == 8


async def test_csv_import_reads_past_bad_bytes_and_oversized_cells(dispatcher, tmp_path) -> None:  # noqa: ANN001
    """A CSV with undecodable bytes, a NUL and a 200 KB cell reports those lines and stores the good ones."""
    from tests.dispatcher.test_cli import shouhu

    header = b"source,source_ref,phone,fraud_type,signal,region_code,occurred_at\n"
    row = "bank,{ref},{phone},fake_loan,other,330106,2026-11-21T09:00:00+08:00\n"
    body = (header + row.format(ref="a", phone="13900000001").encode()
            + b"bank\xff,b,13900000002,fake_loan,other,330106,2026-11-21T09:00:00+08:00\n"
            + row.format(ref="c\u0000", phone="13900000003").encode()
            + row.format(ref="d" * 200_000, phone="13900000004").encode()
            + row.format(ref="e", phone="13900000005").encode())
    path = tmp_path / "warnings.csv"
    path.write_bytes(body)
    done = shouhu(dispatcher.db_url, "import", str(path))
    assert done.returncode == 1, done.stderr
    assert "line 3: source: " in done.stderr  # bytes that are not UTF-8
    assert "line 4: source_ref: must not contain a control character: U+0000" in done.stderr
    assert "line 5: record: not valid CSV (field larger than field limit" in done.stderr
    assert "2 accepted, 0 duplicates, 3 rejected" in done.stderr
    assert await count(dispatcher, "warnings") == 2


async def test_nan_or_a_lone_surrogate_in_one_batch_record_is_refused_in_that_record_only(dispatcher) -> None:
    """A NaN literal or a broken surrogate escape (a truncated emoji) fails its record by field, not the batch."""
    good = [json.dumps(warning(phone=f"1390000{i:04d}")) for i in range(3)]
    nan = json.dumps(warning(source_ref="nan")).replace('"source_ref"', '"amount_at_risk": NaN, "source_ref"')
    surrogate = json.dumps(warning(source_ref="emoji", subject={"name": "张\ud83d"}))  # ensure_ascii: "\ud83d"
    body = '{"warnings": [' + ", ".join([good[0], nan, good[1], surrogate, good[2]]) + "]}"
    resp = await dispatcher.client.post("/v1/warnings/batch", content=body.encode(),
                                        headers={**await dispatcher.headers(), "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted", "rejected", "accepted"]
    assert results[1]["errors"] == [{"field": "amount_at_risk", "reason": "Input should be a finite number"}]
    assert results[3]["errors"][0]["field"] == "subject.name"
    single = await dispatcher.client.post("/v1/warnings", content=surrogate.encode(),
                                          headers={**await dispatcher.headers(), "Content-Type": "application/json"})
    assert single.status_code == 422 and single.json()["errors"][0]["field"] == "subject.name"
    assert await count(dispatcher, "warnings") == 3


async def test_a_key_with_a_lone_surrogate_is_named_escaped_not_a_500(dispatcher) -> None:
    """A key holding a lone surrogate is a 422 (named with an escape where it can be named), not a 500."""
    body = json.dumps({**warning(), "x\ud800": 1}).encode()
    resp = await dispatcher.client.post("/v1/warnings", content=body,
                                        headers={**await dispatcher.headers(), "Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "record"  # pydantic cannot even read the key as text
    batch = await dispatcher.client.post("/v1/warnings/batch", content=b'{"warnings": [], "\\udc80": 1}',
                                         headers={**await dispatcher.headers(), "Content-Type": "application/json"})
    assert batch.status_code == 422 and batch.json()["errors"][0]["field"] == "\\udc80"


async def test_unauthenticated_bad_json_is_401_before_any_parsing(dispatcher) -> None:
    """Without a key, even a body that is not JSON gets 401: the key is checked before the body is read."""
    for path in ("/v1/warnings", "/v1/warnings/batch"):
        resp = await dispatcher.client.post(path, content=b"{nope", headers={"Content-Type": "application/json"})
        assert resp.status_code == 401, (path, resp.text)


async def test_a_database_that_takes_no_connections_is_unavailable_not_every_record_refused(dispatcher) -> None:
    """When the database itself fails, ingest says "unavailable, retry" (503) rather than blaming each record."""
    from services.dispatcher.warnings.flows import IngestUnavailable, run_ingest
    from services.dispatcher.warnings.schemas import parse_record
    from shared.db import database_name, raw_connect, with_database

    records = [parse_record(i, warning(phone=f"1390000{i:04d}"), now=dispatcher.clock.now()) for i in range(4)]
    database = database_name(dispatcher.db_url)
    admin = await raw_connect(with_database(dispatcher.db_url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database)
        rt = dispatcher.runtime
        with pytest.raises(IngestUnavailable):
            await run_ingest(rt.sessionmaker, records, actor="test", store=rt.store, clock=rt.clock)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    answers = await run_ingest(rt.sessionmaker, records, actor="test", store=rt.store, clock=rt.clock)
    assert [a["status"] for a in answers.values()] == ["accepted"] * 4  # the retry stores them all


async def test_a_body_too_big_to_hold_valid_records_is_refused_unread(dispatcher) -> None:
    """A single record past 128 KiB, or a batch past 32 MiB, is a 422 naming the body; nothing is stored."""
    from services.dispatcher.warnings.views import MAX_BATCH_BODY_BYTES, MAX_RECORD_BODY_BYTES

    headers = {**await dispatcher.headers(), "Content-Type": "application/json"}
    single = json.dumps(warning(details={"memo": "x" * MAX_RECORD_BODY_BYTES})).encode()
    resp = await dispatcher.client.post("/v1/warnings", content=single, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"field": "body", "reason": f"larger than {MAX_RECORD_BODY_BYTES} bytes"}]

    async def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(MAX_BATCH_BODY_BYTES // 65536 + 1):
            yield b" " * 65536
        yield b'{"warnings": []}'

    resp = await dispatcher.client.post("/v1/warnings/batch", content=chunks(), headers=headers)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "body"
    assert await count(dispatcher, "warnings") == 0


async def test_true_or_false_is_not_a_number_anywhere_in_a_warning(dispatcher) -> None:
    """`"age": false` was read as age 0 (and graded as a child); booleans in numeric fields are refused by field."""
    from tests.conftest import warning

    headers = await dispatcher.headers()
    for record, field in ((warning(subject={"age": False}), "subject.age"), (warning(risk_score=True), "risk_score"),
                          (warning(amount_at_risk=True), "amount_at_risk")):
        resp = await dispatcher.client.post("/v1/warnings", json=record, headers=headers)
        assert resp.status_code == 422, resp.text
        assert [e["field"] for e in resp.json()["errors"]] == [field]
    assert await count(dispatcher, "warnings") == 0
