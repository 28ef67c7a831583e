"""The audit log: every step recorded, append-only, and a keyed hash chain that exposes edits, re-hashes and cuts.

The attacks are made as whoever reaches the database would make them: as its
owner (the `sessionmaker` fixture), switching the triggers off first. The
services' own role (`dispatcher.sessionmaker`) cannot write the log at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.audit.keys import Checkpoint, head_signature, key_bytes
from shared.audit.service import GENESIS_HASH, entry_hash, record, verify_chain
from shared.db import make_engine, make_sessionmaker, raw_connect, transaction, with_database
from shared.migrate import migrate
from tests.conftest import ROOT, T0, TEST_AUDIT_KEY, warning

KEY = key_bytes(TEST_AUDIT_KEY)


async def fill(dispatcher, n: int = 5) -> list[dict]:  # noqa: ANN001
    headers = await dispatcher.headers()
    out = []
    for i in range(n):
        resp = await dispatcher.client.post("/v1/warnings", json=warning(phone=f"1390000{i:04d}"), headers=headers)
        out.append(resp.json())
    return out


async def verify(dispatcher, checkpoint: str | None = None) -> dict:  # noqa: ANN001
    params = {"checkpoint": checkpoint} if checkpoint is not None else {}
    resp = await dispatcher.client.get("/v1/audit/verify", params=params,
                                       headers=await dispatcher.headers("supervisor", ""))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def checkpoint_now(sessionmaker) -> str:  # noqa: ANN001
    """What `shouhu audit checkpoint` prints, made in-process."""
    async with sessionmaker() as session:
        report = await verify_chain(session, key=KEY)
    assert report.ok
    return Checkpoint.make(KEY, entries=report.head_seq, hash_=report.head_hash).token()


async def tamper(sessionmaker, *statements: str) -> None:  # noqa: ANN001
    """What someone with the owner's (or a superuser's) rights could do: switch the triggers off and edit."""
    async with sessionmaker() as session, session.begin():
        await session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await session.execute(text("ALTER TABLE audit_chain_head DISABLE TRIGGER USER"))
        for statement in statements:
            await session.execute(text(statement))
        await session.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        await session.execute(text("ALTER TABLE audit_chain_head ENABLE TRIGGER USER"))


async def rechain(sessionmaker, *, key: bytes | None, keep: int | None = None, edit_seq: int | None = None) -> None:  # noqa: ANN001
    """Recompute every hash from the start (and move the head), as an attacker would after an edit or a cut.

    key=None: plain SHA-256, all an attacker without the key can do; with the key, a perfect forgery.
    keep: cut the chain after that many entries. edit_seq: change that entry's body first.
    """
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM audit_log ORDER BY seq"))).all()
        keyed_from = (await session.execute(text("SELECT keyed_from FROM audit_chain_head"))).scalar_one()
    rows = rows[:keep] if keep is not None else rows
    statements = [f"DELETE FROM audit_log WHERE seq > {len(rows)}"]
    prev = GENESIS_HASH
    for row in rows:
        body = row.body.replace("bank-test", "forged") if row.seq == edit_seq else row.body
        digest = entry_hash(seq=row.seq, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                            case_id=row.case_id, region_code=row.region_code, body=body, prev_hash=prev, key=key)
        statements.append(f"UPDATE audit_log SET body = '{body}', prev_hash = '{prev}', hash = '{digest}'"
                          f" WHERE seq = {row.seq}")
        prev = digest
    mac = head_signature(key, seq=len(rows), hash_=prev, keyed_from=keyed_from) if key else "0" * 64
    statements.append(f"UPDATE audit_chain_head SET seq = {len(rows)}, hash = '{prev}', mac = '{mac}'")
    await tamper(sessionmaker, *statements)


async def test_chain_verifies_after_concurrent_writers(dispatcher) -> None:
    """Many transactions appending at once still form one unbroken chain (seq 1..N, each linked)."""
    headers = await dispatcher.headers()
    await asyncio.gather(*(
        dispatcher.client.post("/v1/warnings/batch", json={"warnings": [warning(phone=f"1370000{i:04d}")
                                                                        for i in range(k * 10, k * 10 + 10)]},
                               headers=headers)
        for k in range(8)))
    assert await verify(dispatcher) == {"ok": True, "entries": 80, "first_bad": None, "reason": None}


async def test_entries_are_hmacs_under_the_key_and_the_head_is_signed(dispatcher, sessionmaker) -> None:
    """The database's hash is the HMAC Python computes with the key; the head carries its signature."""
    await fill(dispatcher, 2)
    async with sessionmaker() as session:
        row = (await session.execute(text("SELECT * FROM audit_log WHERE seq = 2"))).one()
        head = (await session.execute(text("SELECT * FROM audit_chain_head"))).one()
    assert row.hash == entry_hash(seq=2, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                                  case_id=row.case_id, region_code=row.region_code, body=row.body,
                                  prev_hash=row.prev_hash, key=KEY)
    assert row.hash != entry_hash(seq=2, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                                  case_id=row.case_id, region_code=row.region_code, body=row.body,
                                  prev_hash=row.prev_hash, key=None)
    assert (head.seq, head.hash, head.keyed_from) == (2, row.hash, 1)
    assert head.mac == head_signature(KEY, seq=2, hash_=row.hash, keyed_from=1)


async def test_the_services_role_cannot_write_the_audit_tables(dispatcher) -> None:
    """The role the services connect as may append (through staging) and read, never change the log or its head."""
    await fill(dispatcher, 1)
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                      "INSERT INTO audit_log SELECT seq + 1, at, actor, action, task_id, case_id, region_code,"
                      " body, hash, hash FROM audit_log",
                      "UPDATE audit_chain_head SET seq = 0", "DELETE FROM audit_chain_head",
                      "ALTER TABLE audit_log DISABLE TRIGGER USER", "SELECT * FROM audit_staging"):
        async with dispatcher.sessionmaker() as session:
            with pytest.raises(DBAPIError, match="permission denied|must be owner"):
                await session.execute(text(statement))
    async with dispatcher.sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar_one() == 1


async def test_the_owner_is_refused_by_triggers(dispatcher, sessionmaker) -> None:
    """Even the owner cannot edit the log, or move the head back, with the triggers on."""
    await fill(dispatcher, 3)
    for statement, refusal in (("UPDATE audit_log SET actor = 'x'", "append-only"),
                               ("DELETE FROM audit_log WHERE seq = 3", "append-only"),
                               ("TRUNCATE audit_log", "append-only"),
                               ("UPDATE audit_chain_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2)",
                                "only moves forward"),
                               ("UPDATE audit_chain_head SET seq = 9", "must point at an entry"),
                               ("UPDATE audit_chain_head SET keyed_from = 2", "only moves forward"),
                               ("DELETE FROM audit_chain_head", "DELETE refused"),
                               ("TRUNCATE audit_chain_head", "TRUNCATE refused")):
        async with sessionmaker() as session:
            with pytest.raises(DBAPIError, match=refusal):
                await session.execute(text(statement))


async def test_an_edited_entry_is_found(dispatcher, sessionmaker) -> None:
    """Changing one entry's body makes verify point at exactly that entry."""
    await fill(dispatcher)
    await tamper(sessionmaker, "UPDATE audit_log SET body = replace(body, 'low', 'high') WHERE seq = 3")
    assert await verify(dispatcher) == {"ok": False, "entries": 2, "first_bad": 3,
                                        "reason": "entry content does not match its hash"}


async def test_an_edited_entry_with_a_recomputed_hash_is_found(dispatcher, sessionmaker) -> None:
    """Rewriting an entry and its own hash, even with the key, still breaks the link from the next entry."""
    await fill(dispatcher)
    async with sessionmaker() as session:
        row = (await session.execute(text("SELECT * FROM audit_log WHERE seq = 2"))).one()
    forged_body = row.body.replace("bank-test", "forged")
    forged = entry_hash(seq=2, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                        case_id=row.case_id, region_code=row.region_code, body=forged_body, prev_hash=row.prev_hash,
                        key=KEY)
    await tamper(sessionmaker, f"UPDATE audit_log SET body = '{forged_body}', hash = '{forged}' WHERE seq = 2")
    report = await verify(dispatcher)
    assert report["ok"] is False and report["first_bad"] == 3


async def test_a_deleted_entry_and_a_deleted_tail_are_found(dispatcher, sessionmaker) -> None:
    """A gap in the middle, and entries cut from the end, are both reported."""
    await fill(dispatcher)
    await tamper(sessionmaker, "DELETE FROM audit_log WHERE seq = 5")
    assert (await verify(dispatcher))["first_bad"] == 5
    await tamper(sessionmaker, "DELETE FROM audit_log WHERE seq = 4")
    report = await verify(dispatcher)
    assert report["ok"] is False and report["first_bad"] == 4


async def test_a_rehash_without_the_key_is_found_with_and_without_a_checkpoint(dispatcher, sessionmaker) -> None:
    """Edit an entry and recompute every hash and the head as plain SHA-256: the first entry no longer verifies."""
    await fill(dispatcher)
    checkpoint = await checkpoint_now(sessionmaker)
    await rechain(sessionmaker, key=None, edit_seq=3)
    assert await verify(dispatcher) == {"ok": False, "entries": 0, "first_bad": 1,
                                        "reason": "entry content does not match its hash"}
    assert (await verify(dispatcher, checkpoint))["first_bad"] == 1


async def test_a_cut_tail_with_the_head_moved_back_is_found(dispatcher, sessionmaker) -> None:
    """Delete the last entries and move the head onto the new last one: its signature gives it away."""
    await fill(dispatcher)
    checkpoint = await checkpoint_now(sessionmaker)
    await tamper(sessionmaker, "DELETE FROM audit_log WHERE seq > 3",
                 "UPDATE audit_chain_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)")
    assert await verify(dispatcher) == {
        "ok": False, "entries": 3, "first_bad": 4,
        "reason": "the chain head's signature does not match: entries after it were removed"}
    assert await verify(dispatcher, checkpoint) == {
        "ok": False, "entries": 3, "first_bad": 4,
        "reason": "chain is shorter than the checkpoint (5 entries): entries were removed"}


async def test_a_cut_tail_with_an_old_signed_head_restored_is_found_by_a_checkpoint(dispatcher, sessionmaker) -> None:
    """A head copied from an old backup carries a real signature; only a checkpoint kept elsewhere shows the cut."""
    await fill(dispatcher, 3)
    async with sessionmaker() as session:
        old = (await session.execute(text("SELECT seq, hash, mac FROM audit_chain_head"))).one()
    await fill(dispatcher, 2)
    checkpoint = await checkpoint_now(sessionmaker)
    await tamper(sessionmaker, "DELETE FROM audit_log WHERE seq > 3",
                 f"UPDATE audit_chain_head SET seq = {old.seq}, hash = '{old.hash}', mac = '{old.mac}'")
    report = await verify(dispatcher, checkpoint)
    assert (report["ok"], report["first_bad"]) == (False, 4) and "shorter than the checkpoint" in report["reason"]


async def test_a_rewrite_by_someone_holding_the_key_is_found_by_a_checkpoint(dispatcher, sessionmaker) -> None:
    """With the key stolen, an edit can be re-signed end to end; the checkpoint's hash no longer matches."""
    await fill(dispatcher)
    checkpoint = await checkpoint_now(sessionmaker)
    await rechain(sessionmaker, key=KEY, edit_seq=2)
    report = await verify(dispatcher, checkpoint)
    assert (report["ok"], report["first_bad"]) == (False, 5) and "rewritten" in report["reason"]


async def test_a_checkpoint_stays_valid_as_the_chain_grows_and_must_be_signed(dispatcher, sessionmaker) -> None:
    """Entries added after a checkpoint are fine; an altered or foreign checkpoint is a 422 naming the field."""
    await fill(dispatcher, 2)
    checkpoint = await checkpoint_now(sessionmaker)
    await fill(dispatcher, 2)
    assert await verify(dispatcher, checkpoint) == {"ok": True, "entries": 4, "first_bad": None, "reason": None}
    prefix, entries, digest, signature = checkpoint.split(":")
    headers = await dispatcher.headers("supervisor", "")
    for bad in (f"{prefix}:3:{digest}:{signature}",  # the entry count raised
                Checkpoint.make(b"another deployment's key", entries=2, hash_=digest).token(),
                "not a checkpoint"):
        resp = await dispatcher.client.get("/v1/audit/verify", params={"checkpoint": bad}, headers=headers)
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "checkpoint", resp.text


async def test_rows_past_the_head_are_reported_and_do_not_block_later_writes(dispatcher, sessionmaker) -> None:
    """A row slipped in past the head is reported; later entries still commit (numbered after it)."""
    await fill(dispatcher, 2)
    await tamper(sessionmaker, "INSERT INTO audit_log SELECT 3, at, actor, action, task_id, case_id, region_code,"
                               " body, hash, hash FROM audit_log WHERE seq = 2")
    assert await verify(dispatcher) == {"ok": False, "entries": 2, "first_bad": 3,
                                        "reason": "entries past the chain head (written around the sealing trigger)"}
    resp = await dispatcher.client.post("/v1/warnings", json=warning(phone="13911112222"),
                                        headers=await dispatcher.headers())
    assert resp.status_code == 201
    async with sessionmaker() as session:
        assert (await session.execute(text("SELECT max(seq) FROM audit_log"))).scalar_one() == 4
    report = await verify(dispatcher)
    assert (report["ok"], report["first_bad"]) == (False, 3)


async def test_a_connection_without_the_key_cannot_seal_entries(db_url: str) -> None:
    """An entry is never chained unkeyed: the commit fails on a connection that carries no audit key."""
    engine = make_engine(db_url, pool_size=1)
    try:
        with pytest.raises(DBAPIError, match="no audit key on this connection"):
            async with transaction(make_sessionmaker(engine)) as session:
                record(session, at=T0, actor="test", action="test.entry")
    finally:
        await engine.dispose()


async def test_shouhu_audit_checkpoint_is_accepted_by_verify(dispatcher) -> None:
    """The CLI prints a signed head (entries, hash, signature) that GET /v1/audit/verify accepts."""
    await fill(dispatcher, 3)
    done = subprocess.run([sys.executable, "-m", "shouhu.cli", "audit", "checkpoint"], cwd=ROOT,
                          env={**os.environ, "DATABASE_URL": dispatcher.db_url}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["entries"], len(printed["hash"]), len(printed["signature"])) == (3, 64, 64)
    assert printed["checkpoint"] == f"shouhu-audit:3:{printed['hash']}:{printed['signature']}"
    assert await verify(dispatcher, printed["checkpoint"]) == {"ok": True, "entries": 3, "first_bad": None,
                                                               "reason": None}
    # The supervisor console's audit page takes the same checkpoint.
    from tests.console.test_supervisor_console import key_of, signed_in

    await signed_in(dispatcher.client, await key_of(dispatcher, "supervisor", "33"))
    page = await dispatcher.client.get(f"/console/audit/verify?checkpoint={quote(printed['checkpoint'])}")
    assert "✔" in page.text and "与检查点（3 条）一致" in page.text
    altered = printed["checkpoint"].replace("shouhu-audit:3:", "shouhu-audit:2:")
    page = await dispatcher.client.get(f"/console/audit/verify?checkpoint={quote(altered)}")
    assert "检查点无效" in page.text and "signature does not match" in page.text


async def test_shouhu_audit_checkpoint_refuses_a_broken_chain(dispatcher, sessionmaker) -> None:
    """No checkpoint vouches for a chain that does not verify: exit 1 with the reason."""
    await fill(dispatcher, 2)
    await tamper(sessionmaker, "UPDATE audit_log SET body = replace(body, 'low', 'high') WHERE seq = 2")
    done = subprocess.run([sys.executable, "-m", "shouhu.cli", "audit", "checkpoint"], cwd=ROOT,
                          env={**os.environ, "DATABASE_URL": dispatcher.db_url}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "entry 2" in done.stderr and not done.stdout


async def test_unkeyed_entries_written_before_0015_stay_verifiable_and_anchored(server_url: str) -> None:
    """A log written under 0013 (SHA-256) gets a keyed marker at 0015; rewriting the old part is then found."""
    name = f"shouhu_t_{uuid.uuid4().hex[:16]}"
    admin = await raw_connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(server_url, name)
    engine = make_engine(url, pool_size=1, audit_key=TEST_AUDIT_KEY)
    try:
        await migrate(url, "0013", audit_key=TEST_AUDIT_KEY)
        sessionmaker = make_sessionmaker(engine)
        for i in range(3):  # sealed by 0002's trigger: plain SHA-256
            async with transaction(sessionmaker) as session:
                record(session, at=T0, actor="key:old:legacy", action="task.created", region_code="330106", n=i)
        async with sessionmaker() as session:
            old_head = (await session.execute(text("SELECT seq, hash FROM audit_chain_head"))).one()
        await migrate(url, audit_key=TEST_AUDIT_KEY)
        async with transaction(sessionmaker) as session:
            record(session, at=T0, actor="key:new:current", action="task.created", region_code="330106", n=3)
        async with sessionmaker() as session:
            marker = (await session.execute(text("SELECT * FROM audit_log WHERE seq = 4"))).one()
            keyed_from = (await session.execute(text("SELECT keyed_from FROM audit_chain_head"))).scalar_one()
            report = await verify_chain(session, key=KEY)
        assert (marker.action, marker.actor, keyed_from) == ("audit.chain_keyed", "system:migrate", 4)
        assert json.loads(marker.body)["last_unkeyed_hash"] == old_head.hash == marker.prev_hash
        assert (report.ok, report.entries) == (True, 5)
        # Rewrite an old entry and recompute the old part's SHA-256 chain: the keyed marker no longer links.
        async with sessionmaker() as session:
            rows = (await session.execute(text("SELECT * FROM audit_log WHERE seq <= 3 ORDER BY seq"))).all()
        statements, prev = [], GENESIS_HASH
        for row in rows:
            body = row.body.replace('"n":1', '"n":9')
            digest = entry_hash(seq=row.seq, at=row.at, actor=row.actor, action=row.action, task_id=None,
                                case_id=None, region_code=row.region_code, body=body, prev_hash=prev, key=None)
            escaped = body.replace(":", "\\:")  # text() would read ':1' as a bind parameter
            statements.append(f"UPDATE audit_log SET body = '{escaped}', prev_hash = '{prev}', hash = '{digest}'"
                              f" WHERE seq = {row.seq}")
            prev = digest
        await tamper(sessionmaker, *statements)
        async with sessionmaker() as session:
            report = await verify_chain(session, key=KEY)
        assert (report.ok, report.entries, report.first_bad) == (False, 3, 4)
    finally:
        await engine.dispose()
        admin = await raw_connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


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


async def test_nothing_is_left_in_staging_after_commit(dispatcher, sessionmaker) -> None:
    """Staged entries are moved into the chain by the commit itself."""
    await fill(dispatcher, 3)
    async with sessionmaker() as session:
        staged = (await session.execute(text("SELECT count(*) FROM audit_staging"))).scalar_one()
        chained = (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert (staged, chained) == (0, 3)
