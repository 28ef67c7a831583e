"""The `shouhu` command: key creation and bulk import, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from tests.conftest import ROOT, TEST_AUDIT_KEY


def shouhu(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "shouhu.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


async def test_keys_create_prints_a_working_key(dispatcher) -> None:
    """`shouhu keys create` prints a key that the API accepts with that role and unit."""
    done = shouhu(dispatcher.db_url, "keys", "create", "--role", "ingest", "--unit", "3301", "--name", "icbc-zj")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("shk_")
    resp = await dispatcher.client.post("/v1/warnings", headers={"Authorization": f"Bearer {key}"},
                                        json={"source": "icbc", "source_ref": "k1", "phone": "13800138000",
                                              "fraud_type": "fake_loan", "signal": "fraud_sms_received",
                                              "region_code": "330106", "occurred_at": "2026-11-21T09:00:00+08:00"})
    assert resp.status_code == 201


def test_keys_create_refuses_a_bad_unit_or_role(db_url: str) -> None:
    """A unit that is not a region-code prefix, or an unknown role, is refused with the reason."""
    done = shouhu(db_url, "keys", "create", "--role", "ingest", "--unit", "33a")
    assert done.returncode == 2 and "unit must be" in done.stderr
    done = shouhu(db_url, "keys", "create", "--role", "root", "--unit", "33")
    assert done.returncode == 2 and "role must be" in done.stderr


async def test_import_csv_reports_each_bad_line_and_stores_the_rest(sessionmaker, db_url: str, tmp_path: Path) -> None:
    """CSV import: good lines stored, each bad line reported with its line number and field, exit 1."""
    path = tmp_path / "warnings.csv"
    path.write_text(
        "source,source_ref,phone,fraud_type,signal,region_code,occurred_at,amount_at_risk,subject.age,details\n"
        'bank,r1,138 0013 8000,fake_investment,fraud_call_received,330106,2026-11-21 09:00:00,,70,"{""a"": 1}"\n'
        "bank,r2,12345,fake_investment,fraud_call_received,330106,2026-11-21 09:00:00,,,\n"
        "bank,r3,13900000003,fake_loan,transfer_in_progress,330102,2026-11-21T09:00:00+08:00,60000,,\n"
        "bank,r4,13900000004,fake_loan,other,99,2026-11-21T09:00:00+08:00,,,\n",
        encoding="utf-8")
    report = tmp_path / "errors.csv"
    done = shouhu(db_url, "import", str(path), "--errors", str(report))
    assert done.returncode == 1, done.stderr
    assert "line 3: phone:" in done.stderr and "line 5: region_code:" in done.stderr
    assert "2 accepted, 0 duplicates, 2 rejected" in done.stderr
    assert report.read_text().splitlines()[0] == "line,field,reason"
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT source_ref, tier FROM warnings ORDER BY source_ref"))).all()
    assert [tuple(r) for r in rows] == [("r1", "high"), ("r3", "high")]  # r1: medium + aged 70


async def test_import_jsonl_twice_is_idempotent(sessionmaker, db_url: str, tmp_path: Path) -> None:
    """Re-running an import stores nothing twice: the second run reports duplicates."""
    path = tmp_path / "warnings.jsonl"
    lines = [json.dumps({"source": "telecom", "source_ref": f"t{i}", "phone": f"1380000{i:04d}",
                         "fraud_type": "task_brushing", "signal": "fraud_site_visited", "region_code": "330106",
                         "occurred_at": "2026-11-21T09:00:00+08:00"}) for i in range(30)]
    path.write_text("\n".join(lines) + "\n{not json\n", encoding="utf-8")
    first = shouhu(db_url, "import", str(path), "--batch-size", "7")
    assert "30 accepted, 0 duplicates, 1 rejected" in first.stderr
    assert "line 31: record: not valid JSON" in first.stderr
    second = shouhu(db_url, "import", str(path))
    assert "0 accepted, 30 duplicates, 1 rejected" in second.stderr
    async with sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM warnings"))).scalar_one() == 30


async def test_make_run_demo_keys_are_stable_and_open_their_consoles(dispatcher, tmp_path: Path) -> None:
    """`shouhu up` makes one demo supervisor and one operator key per data directory; a restart reuses them."""
    from shouhu.cli import _demo_keys

    first = await _demo_keys(dispatcher.db_url, tmp_path, audit_key=TEST_AUDIT_KEY)
    again = await _demo_keys(dispatcher.db_url, tmp_path, audit_key=TEST_AUDIT_KEY)
    assert first == again and set(first) == {"supervisor", "operator"}
    state = dispatcher.app.state
    supervisor = await state.key_cache.authenticate(state.sessionmaker, first["supervisor"])
    operator = await state.key_cache.authenticate(state.sessionmaker, first["operator"])
    assert (supervisor.role, supervisor.unit, operator.role, operator.unit) == ("supervisor", "33", "operator", "33")
