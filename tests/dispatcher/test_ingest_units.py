"""Another unit's case: one case per person (one team calls), but no ids, tier or deadline leak to the sender."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.conftest import warning

PHONE = "13900000001"
# The ids, grade and deadline of the owning unit's case: never in another unit's answer.
OWNERS_FIELDS = {"case_id", "task_id", "tier", "due_at", "reasons"}


async def _post(dispatcher, record: dict, unit: str):  # noqa: ANN001, ANN202
    return await dispatcher.client.post("/v1/warnings", json=record, headers=await dispatcher.headers("ingest", unit))


async def _events(dispatcher, task_id: str, unit: str) -> list[dict]:  # noqa: ANN001
    resp = await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=await dispatcher.headers("supervisor", unit))
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


async def test_a_warning_from_another_unit_joins_the_case_without_seeing_it(dispatcher) -> None:
    """Unit A's warning about unit B's person merges into B's case; A learns only its own warning id."""
    owner = (await _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106")).json()
    resp = await _post(dispatcher, warning(phone=PHONE, region_code="330102", source="telecom-a"), "330102")
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert answer["merged"] is True and answer["handled_elsewhere"] is True
    assert not OWNERS_FIELDS & set(answer), answer
    assert owner["case_id"] not in resp.text and owner["task_id"] not in resp.text
    assert any("another unit already handles this person" in n for n in answer["warnings"])
    async with dispatcher.sessionmaker() as session:
        rows = (await session.execute(text("SELECT id::text, case_id::text FROM warnings ORDER BY id"))).all()
        cases = (await session.execute(text("SELECT count(*) FROM cases"))).scalar_one()
    assert cases == 1 and [r.case_id for r in rows] == [owner["case_id"]] * 2
    assert answer["warning_id"] == rows[1].id
    # A's supervisor cannot open B's task either.
    hidden = await dispatcher.client.get(f"/v1/tasks/{owner['task_id']}",
                                         headers=await dispatcher.headers("supervisor", "330102"))
    assert hidden.status_code == 404


async def test_the_owning_unit_sees_who_joined_its_case_and_no_more(dispatcher) -> None:
    """B's task timeline and audit log get "warning.joined_from_other_unit" naming A's unit and source only."""
    owner = (await _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106")).json()
    await _post(dispatcher, warning(phone=PHONE, region_code="330102", source="telecom-a", source_ref="secret-ref",
                                    subject={"name": "张某"}, details={"memo": "a's own notes"}), "330102")
    events = await _events(dispatcher, owner["task_id"], "330106")
    joined = [e for e in events if e["type"] == "warning.joined_from_other_unit"]
    assert len(joined) == 1
    assert joined[0]["actor"] == "unit:330102"
    assert joined[0]["detail"] == {"from_unit": "330102", "source": "telecom-a", "task_tier": "low",
                                   "due_at": joined[0]["detail"]["due_at"]}
    assert not [e for e in events if e["type"] == "warning.merged"]
    audit_b = await dispatcher.client.get("/v1/audit", params={"action": "warning.joined_from_other_unit"},
                                          headers=await dispatcher.headers("supervisor", "330106"))
    assert [e["task_id"] for e in audit_b.json()["items"]] == [owner["task_id"]]
    audit_a = await dispatcher.client.get("/v1/audit", headers=await dispatcher.headers("supervisor", "330102"))
    assert audit_a.json()["items"] == []


async def test_a_higher_grade_from_another_unit_raises_the_owners_task_and_says_so(dispatcher) -> None:
    """A's urgent warning raises B's low task to high; B's event shows before and after, A's answer stays blind."""
    owner = (await _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106")).json()
    assert owner["tier"] == "low"
    resp = await _post(dispatcher, warning(phone=PHONE, region_code="330102", signal="transfer_in_progress"), "330102")
    assert resp.status_code == 201 and not OWNERS_FIELDS & set(resp.json())
    events = await _events(dispatcher, owner["task_id"], "330106")
    joined = next(e for e in events if e["type"] == "warning.joined_from_other_unit")
    assert joined["detail"]["before"] == {"tier": "low"} and joined["detail"]["after"]["tier"] == "high"
    task = (await dispatcher.client.get(f"/v1/tasks/{owner['task_id']}",
                                        headers=await dispatcher.headers("supervisor", "330106"))).json()
    assert task["tier"] == "high"


async def test_a_replay_of_a_cross_unit_warning_is_as_blind_as_the_first_answer(dispatcher) -> None:
    """Replaying the joined warning (single and batch) answers duplicate with the same own id and nothing more."""
    await _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106")
    record = warning(phone=PHONE, region_code="330102")
    first = (await _post(dispatcher, record, "330102")).json()
    again = await _post(dispatcher, record, "330102")
    assert again.status_code == 200
    assert again.json()["warning_id"] == first["warning_id"] and again.json()["handled_elsewhere"] is True
    assert not OWNERS_FIELDS & set(again.json())
    batch = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [record, record]},
                                         headers=await dispatcher.headers("ingest", "330102"))
    for result in batch.json()["results"]:
        assert result["status"] == "duplicate" and result["warning_id"] == first["warning_id"]
        assert not OWNERS_FIELDS & set(result)


async def test_replaying_another_units_source_ref_never_returns_its_ids(dispatcher) -> None:
    """B's (source, source_ref) sent by another unit's key is that unit's own record: its own ids, never B's."""
    b_record = warning(phone=PHONE, region_code="330106", source="bank", source_ref="R-1")
    owner = (await _post(dispatcher, b_record, "330106")).json()
    # The same key about the same person, from A: stored as A's warning, joined to B's case, blind.
    same = await _post(dispatcher, {**b_record, "region_code": "330102"}, "330102")
    assert same.status_code == 201 and same.json()["warning_id"] != owner["warning_id"]
    assert owner["warning_id"] not in same.text and owner["case_id"] not in same.text
    # The same key from a third unit about someone else (two systems numbering alike): its own new case and ids.
    other = await _post(dispatcher, {**b_record, "region_code": "330108", "phone": "13900000002"}, "330108")
    assert other.status_code == 201, other.text
    assert other.json()["merged"] is False and other.json()["case_id"] != owner["case_id"]
    # In a batch too.
    batch = await dispatcher.client.post("/v1/warnings/batch", json={"warnings": [{**b_record,
                                                                                   "region_code": "330102"}]},
                                         headers=await dispatcher.headers("ingest", "330102"))
    result = batch.json()["results"][0]
    assert result["status"] == "duplicate" and result["warning_id"] == same.json()["warning_id"]
    assert owner["warning_id"] not in batch.text and owner["task_id"] not in batch.text
    # B's own replay still answers B's original.
    mine = await _post(dispatcher, b_record, "330106")
    assert mine.status_code == 200 and mine.json()["warning_id"] == owner["warning_id"]


async def test_a_key_whose_unit_covers_the_case_sees_it(dispatcher) -> None:
    """The city's key (3301) posting about a district's (330106) person gets the full answer: it may see it."""
    owner = (await _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106")).json()
    resp = await _post(dispatcher, warning(phone=PHONE, region_code="330102"), "3301")
    assert resp.json()["case_id"] == owner["case_id"] and "handled_elsewhere" not in resp.json()
    events = await _events(dispatcher, owner["task_id"], "330106")
    assert [e["type"] for e in events if e["type"].startswith("warning.")] == ["warning.merged"]


async def test_two_units_warning_one_new_person_at_once_make_one_case_and_one_full_answer(dispatcher) -> None:
    """Concurrent warnings from two districts about one new person: one case; only its owner sees its ids."""
    replies = await asyncio.gather(
        _post(dispatcher, warning(phone=PHONE, region_code="330106"), "330106"),
        _post(dispatcher, warning(phone=PHONE, region_code="330102"), "330102"))
    answers = [r.json() for r in replies]
    assert [r.status_code for r in replies] == [201, 201]
    full = [a for a in answers if "case_id" in a]
    blind = [a for a in answers if a.get("handled_elsewhere")]
    assert len(full) == 1 and len(blind) == 1 and not OWNERS_FIELDS & set(blind[0])
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM cases"))).scalar_one() == 1
