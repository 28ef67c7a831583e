"""API keys: 401 without a valid key, 403 for the wrong role or unit, 404 for tasks outside the unit."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import warning


async def test_missing_or_unknown_key_is_401(dispatcher) -> None:
    """No key, a malformed header, or an unknown key: 401 with a Bearer challenge."""
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer shk_deadbeef00_nope-nope-nope-nope-nope"}):
        resp = await dispatcher.client.post("/v1/warnings", json=warning(), headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"


async def test_keys_are_stored_hashed(dispatcher) -> None:
    """The secret part of a key is never stored."""
    headers = await dispatcher.headers()
    secret = headers["Authorization"].split("_", 2)[2]
    async with dispatcher.sessionmaker() as session:
        stored = (await session.execute(text("SELECT secret_sha256 FROM api_keys"))).scalars().all()
    assert stored and all(secret not in value for value in stored)


async def test_wrong_role_is_403(dispatcher) -> None:
    """An operator key cannot post warnings; an ingest key cannot post feedback or read the audit log."""
    resp = await dispatcher.client.post("/v1/warnings", json=warning(), headers=await dispatcher.headers("operator"))
    assert resp.status_code == 403
    task_id = (await dispatcher.client.post("/v1/warnings", json=warning(),
                                            headers=await dispatcher.headers())).json()["task_id"]
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "dissuaded"},
                                        headers=await dispatcher.headers("ingest"))
    assert resp.status_code == 403
    resp = await dispatcher.client.get("/v1/audit", headers=await dispatcher.headers("officer"))
    assert resp.status_code == 403


async def test_ingest_outside_the_unit_is_refused_and_stores_nothing(dispatcher) -> None:
    """A Hangzhou key cannot file a Nanjing warning: 403 single, per-record rejection in a batch."""
    headers = await dispatcher.headers("ingest", "3301")
    resp = await dispatcher.client.post("/v1/warnings", json=warning(region_code="320102"), headers=headers)
    assert resp.status_code == 403 and "outside" in resp.json()["detail"]
    resp = await dispatcher.client.post("/v1/warnings/batch", headers=headers,
                                        json={"warnings": [warning(region_code="320102"), warning()]})
    assert [r["status"] for r in resp.json()["results"]] == ["rejected", "accepted"]
    assert resp.json()["results"][0]["errors"][0]["field"] == "region_code"


async def test_tasks_outside_the_unit_do_not_exist_for_the_key(dispatcher) -> None:
    """Reading or changing another unit's task is 404 (not 403: that would confirm it exists)."""
    task_id = (await dispatcher.client.post("/v1/warnings", json=warning(region_code="330106"),
                                            headers=await dispatcher.headers())).json()["task_id"]
    other = await dispatcher.headers("officer", "3302")
    assert (await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=other)).status_code == 404
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "dissuaded"},
                                        headers=other)
    assert resp.status_code == 404
    own = await dispatcher.headers("officer", "330106")
    assert (await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=own)).status_code == 200


async def test_task_list_is_scoped_filtered_and_paged(dispatcher) -> None:
    """Listing shows only the unit's tasks, honours filters, and pages with a cursor without repeats."""
    headers = await dispatcher.headers("ingest", "")
    for i in range(5):
        await dispatcher.client.post("/v1/warnings", json=warning(phone=f"1380000{i:04d}", region_code="330106"),
                                     headers=headers)
    await dispatcher.client.post("/v1/warnings", json=warning(phone="13911119999", region_code="320102",
                                                              signal="screen_sharing"), headers=headers)
    reader = await dispatcher.headers("supervisor", "33")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await dispatcher.client.get("/v1/tasks", params=params, headers=reader)).json()
        seen += [t["task_id"] for t in page["items"]]
        assert all(t["region_code"].startswith("33") for t in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    everyone = await dispatcher.headers("supervisor", "")
    high = (await dispatcher.client.get("/v1/tasks", params={"tier": "high"}, headers=everyone)).json()["items"]
    assert [t["region_code"] for t in high] == ["320102"]
    resp = await dispatcher.client.get("/v1/tasks", params={"region": "32"}, headers=reader)
    assert resp.status_code == 403
