"""The audit log: every step recorded, append-only, and a hash chain that exposes edits and deletions."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import warning


async def fill(dispatcher, n: int = 5) -> list[dict]:  # noqa: ANN001
    headers = await dispatcher.headers()
    out = []
    for i in range(n):
        resp = await dispatcher.client.post("/v1/warnings", json=warning(phone=f"1390000{i:04d}"), headers=headers)
        out.append(resp.json())
    return out


async def verify(dispatcher) -> dict:  # noqa: ANN001
    resp = await dispatcher.client.get("/v1/audit/verify", headers=await dispatcher.headers("supervisor", ""))
    assert resp.status_code == 200
    return resp.json()


async def test_chain_verifies_after_concurrent_writers(dispatcher) -> None:
    """Many transactions appending at once still form one unbroken chain (seq 1..N, each linked)."""
    headers = await dispatcher.headers()
    await asyncio.gather(*(
        dispatcher.client.post("/v1/warnings/batch", json={"warnings": [warning(phone=f"1370000{i:04d}")
                                                                        for i in range(k * 10, k * 10 + 10)]},
                               headers=headers)
        for k in range(8)))
    assert await verify(dispatcher) == {"ok": True, "entries": 80, "first_bad": None, "reason": None}


async def test_the_database_refuses_updates_and_deletes(dispatcher) -> None:
    """Append-only is enforced by a trigger, not by convention."""
    await fill(dispatcher, 1)
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        async with dispatcher.sessionmaker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))


async def tamper(dispatcher, statement: str) -> None:  # noqa: ANN001
    """What an attacker with database superuser rights could do: switch the trigger off and edit."""
    async with dispatcher.sessionmaker() as session, session.begin():
        await session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await session.execute(text(statement))
        await session.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


async def test_an_edited_entry_is_found(dispatcher) -> None:
    """Changing one entry's body makes verify point at exactly that entry."""
    await fill(dispatcher)
    await tamper(dispatcher, "UPDATE audit_log SET body = replace(body, 'low', 'high') WHERE seq = 3")
    assert await verify(dispatcher) == {"ok": False, "entries": 2, "first_bad": 3,
                                        "reason": "entry content does not match its hash"}


async def test_an_edited_entry_with_a_recomputed_hash_is_found(dispatcher) -> None:
    """Rewriting an entry and its own hash still breaks the link from the next entry."""
    await fill(dispatcher)
    async with dispatcher.sessionmaker() as session:
        row = (await session.execute(text("SELECT * FROM audit_log WHERE seq = 2"))).one()
    from shared.audit.service import entry_hash

    forged_body = row.body.replace("bank-test", "forged")
    forged = entry_hash(seq=2, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                        case_id=row.case_id, region_code=row.region_code, body=forged_body, prev_hash=row.prev_hash)
    await tamper(dispatcher, f"UPDATE audit_log SET body = '{forged_body}', hash = '{forged}' WHERE seq = 2")
    report = await verify(dispatcher)
    assert report["ok"] is False and report["first_bad"] == 3


async def test_a_deleted_entry_and_a_deleted_tail_are_found(dispatcher) -> None:
    """A gap in the middle, and entries cut from the end, are both reported."""
    await fill(dispatcher)
    await tamper(dispatcher, "DELETE FROM audit_log WHERE seq = 5")
    assert (await verify(dispatcher))["first_bad"] == 5
    await tamper(dispatcher, "DELETE FROM audit_log WHERE seq = 4")
    report = await verify(dispatcher)
    assert report["ok"] is False and report["first_bad"] == 4


async def test_audit_search_is_scoped_to_the_unit(dispatcher) -> None:
    """A city supervisor sees the city's entries only, and filters by task."""
    headers = await dispatcher.headers()
    hz = (await dispatcher.client.post("/v1/warnings", json=warning(region_code="330106"), headers=headers)).json()
    await dispatcher.client.post("/v1/warnings", json=warning(region_code="320102", phone="13911110000"),
                                 headers=await dispatcher.headers("ingest", "32"))
    resp = await dispatcher.client.get("/v1/audit", headers=await dispatcher.headers("supervisor", "3301"))
    assert [e["region_code"] for e in resp.json()["items"]] == ["330106"]
    resp = await dispatcher.client.get("/v1/audit", params={"task_id": hz["task_id"]},
                                       headers=await dispatcher.headers("supervisor", ""))
    items = resp.json()["items"]
    assert len(items) == 1 and items[0]["action"] == "task.created" and items[0]["body"]["warning_tier"] == "low"


async def test_entries_with_chinese_quotes_and_control_characters_verify(dispatcher) -> None:
    """The database's hashing and the verifier's agree on any text a note can hold."""
    headers = await dispatcher.headers()
    task_id = (await dispatcher.client.post("/v1/warnings", json=warning(), headers=headers)).json()["task_id"]
    note = '已上门劝阻，老人说"再也不转账了"\n\ttab \\ backslash 🙂'  # \n, \t: the controls a note may hold
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "dissuaded", "note": note},
                                        headers=await dispatcher.headers("officer", "33"))
    assert resp.status_code == 200
    assert resp.json()["task"]["events"][-1]["detail"]["note"] == note
    assert (await verify(dispatcher))["ok"] is True


async def test_nothing_is_left_in_staging_after_commit(dispatcher) -> None:
    """Staged entries are moved into the chain by the commit itself."""
    await fill(dispatcher, 3)
    async with dispatcher.sessionmaker() as session:
        staged = (await session.execute(text("SELECT count(*) FROM audit_staging"))).scalar_one()
        chained = (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert (staged, chained) == (0, 3)
