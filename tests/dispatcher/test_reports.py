"""Compliance and ranking reports on a known data set (expectations computed by hand), scoped to the unit."""

from __future__ import annotations

import csv
import io


async def test_compliance_per_tier_matches_the_hand_count(dispatcher, known) -> None:
    """Due, in time, breached, open, reach rate, closure times and outcomes per tier and in total."""
    resp = await dispatcher.client.get("/v1/reports/compliance", params=known,
                                       headers=await dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 200, resp.text
    report = resp.json()
    high, medium, low, total = (report["tiers"]["high"], report["tiers"]["medium"], report["tiers"]["low"],
                                report["total"])
    assert (high["due"], high["closed_in_time"], high["breached"], high["still_open"]) == (2, 1, 1, 1)
    assert high["compliance_rate"] == 0.5 and high["reach_rate"] == 0
    assert (medium["due"], medium["closed_in_time"], medium["reach_rate"]) == (1, 1, 1.0)
    assert medium["first_contact_p50_s"] == 3600 and medium["closure_p50_s"] == 3600
    assert (low["due"], low["closed_in_time"], low["breached"], low["still_open"]) == (1, 0, 1, 1)
    assert (total["due"], total["closed_in_time"], total["breached"], total["still_open"]) == (4, 2, 2, 2)
    assert total["reach_rate"] == 0.25
    assert total["closure_p50_s"] == 2700 and total["closure_p90_s"] == 3420  # closures after 1800 s and 3600 s
    assert total["outcomes"]["dissuaded"] == 1 and total["outcomes"]["acknowledged"] == 1


async def test_compliance_is_scoped_to_the_unit(dispatcher, known) -> None:
    """A city supervisor counts only the city's tasks; asking for another city is 403."""
    hz = await dispatcher.headers("supervisor", "3301")
    report = (await dispatcher.client.get("/v1/reports/compliance", params=known, headers=hz)).json()
    assert report["total"]["due"] == 3 and report["tiers"]["high"]["due"] == 1
    assert (await dispatcher.client.get("/v1/reports/compliance", params={**known, "unit": "3302"},
                                        headers=hz)).status_code == 403


async def test_ranking_puts_the_worst_compliance_first_with_csv(dispatcher, known) -> None:
    """Cities under the province, worst compliance first, with warning volume and reach; CSV on request."""
    headers = await dispatcher.headers("supervisor", "33")
    units = (await dispatcher.client.get("/v1/reports/ranking", params=known, headers=headers)).json()["units"]
    assert [(u["unit"], u["rank"], u["tasks_due"], u["compliance_rate"]) for u in units] == [
        ("3302", 1, 1, 0.0), ("3301", 2, 3, 0.6667)]
    assert units[1]["warnings"] == 3 and units[1]["warnings_change"] == 3 and units[1]["reach_rate"] == 0.3333
    resp = await dispatcher.client.get("/v1/reports/ranking", params=known,
                                       headers={**headers, "Accept": "text/csv"})
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["unit"] for r in rows] == ["3302", "3301"]


async def test_reports_need_a_supervisor_key(dispatcher) -> None:
    """An operator key cannot read reports."""
    resp = await dispatcher.client.get("/v1/reports/compliance", headers=await dispatcher.headers("operator", "33"))
    assert resp.status_code == 403


async def test_overview_counts_open_work_and_lists_the_most_urgent_first(dispatcher, known) -> None:
    """Open tasks by tier and status in the unit, nearest or past deadline first."""
    report = (await dispatcher.client.get("/v1/reports/overview",
                                          headers=await dispatcher.headers("supervisor", "33"))).json()
    assert report["open_by_tier"]["high"]["breached"] == 1 and report["open_by_tier"]["low"]["breached"] == 1
    assert sum(v["open"] + v["in_progress"] for v in report["open_by_tier"].values()) == 2
    urgent = report["nearest_deadlines"]
    assert [u["tier"] for u in urgent] == ["high", "low"]  # D was due at T0+2 h, C at T0+72 h
    assert urgent[0]["minutes_left"] == -78 * 60


async def test_audit_exports_as_csv_with_the_hashed_body(dispatcher, known) -> None:
    """An admin's audit export keeps each body as the exact text its keyed hash covers."""
    from datetime import datetime as dt

    from shared.audit.keys import key_bytes
    from shared.audit.service import entry_hash
    from tests.conftest import TEST_AUDIT_KEY

    resp = await dispatcher.client.get("/v1/audit", headers={**await dispatcher.headers("admin", ""),
                                                              "Accept": "text/csv"})
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert rows and rows[0]["seq"] == "1"
    first = rows[0]
    assert entry_hash(seq=1, at=dt.fromisoformat(first["at"]), actor=first["actor"], action=first["action"],
                      task_id=first["task_id"] or None, case_id=first["case_id"] or None,
                      region_code=first["region_code"] or None, body=first["body"],
                      prev_hash="0" * 64, key=key_bytes(TEST_AUDIT_KEY)) == first["hash"]


async def test_exports_mask_phone_and_id_numbers_for_supervisors(dispatcher) -> None:
    """A supervisor's CSV (API and console) shows no phone or ID number in clear, of any country; an admin's does."""
    from tests.conftest import warning
    from tests.console.test_supervisor_console import key_of, signed_in

    task = (await dispatcher.client.post("/v1/warnings", json=warning(phone="+852 9123 4567"),
                                         headers=await dispatcher.headers())).json()
    note = "家属电话 +44 20 7946 0958，座机 0571-8700 0001，身份证 330106199001011234"
    resp = await dispatcher.client.post(f"/v1/tasks/{task['task_id']}/feedback",
                                        json={"outcome": "dissuaded", "note": note},
                                        headers=await dispatcher.headers("officer", "33"))
    assert resp.status_code == 200, resp.text
    clear = ("7946 0958", "8700 0001", "330106199001011234")

    async def export(role: str) -> str:
        return (await dispatcher.client.get("/v1/audit", params={"task_id": task["task_id"]}, headers={
            **await dispatcher.headers(role, "33"), "Accept": "text/csv"})).text

    supervisor = await export("supervisor")
    assert "+4420****0958" in supervisor and "3301**********1234" in supervisor
    assert not any(secret in supervisor for secret in clear)
    admin = await export("admin")
    assert all(secret in admin for secret in clear)
    await signed_in(dispatcher.client, await key_of(dispatcher, "supervisor", "33"))
    console = (await dispatcher.client.get(f"/console/audit.csv?task_id={task['task_id']}")).text
    assert "+4420****0958" in console and not any(secret in console for secret in clear)
