"""Emergencies over the dispatcher's API: the payment stop's lifecycle, the refused closes, the unit rule."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sqlalchemy import text

from services.dispatcher.tasks import service as tasks
from shared import contracts
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.queue.service import enqueue
from tests.conftest import warning


async def new_task(dispatcher, region: str = "330106", phone: str = "13800138000", **fields) -> str:  # noqa: ANN001
    resp = await dispatcher.client.post("/v1/warnings", json=warning(region_code=region, phone=phone, **fields),
                                        headers=await dispatcher.headers("ingest", ""))
    assert resp.status_code == 201, resp.text
    return resp.json()["task_id"]


async def report_loss(dispatcher, task_id: str, unit: str = "33"):  # noqa: ANN001, ANN201
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback",
                                        json={"outcome": "loss_reported", "note": "市民说已转账"},
                                        headers=await dispatcher.headers("officer", unit))
    assert resp.status_code == 200 and resp.json()["action"] == "emergency", resp.text
    return resp


async def move(dispatcher, task_id: str, unit: str = "33", role: str = "supervisor", **body):  # noqa: ANN001, ANN201
    return await dispatcher.client.post(f"/v1/emergencies/{task_id}/payment-stop", json=body,
                                        headers=await dispatcher.headers(role, unit))


async def get_task(dispatcher, task_id: str) -> dict:  # noqa: ANN001
    resp = await dispatcher.client.get(f"/v1/tasks/{task_id}", headers=await dispatcher.headers("supervisor", ""))
    return resp.json()


async def audit_bodies(dispatcher, task_id: str, prefix: str) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        rows = await session.execute(text("SELECT action, actor, body FROM audit_log WHERE task_id = :t"
                                          " AND action LIKE :p ORDER BY seq"), {"t": task_id, "p": prefix + "%"})
        return [(r.action, r.actor, orjson.loads(r.body)) for r in rows]


async def test_a_reported_loss_is_listed_with_its_payment_stop(dispatcher) -> None:
    """Feedback loss_reported: GET /v1/emergencies lists the task with tier, region, due_at, reported_at and 'requested'."""
    task_id = await new_task(dispatcher)
    dispatcher.clock.advance(minutes=3)
    await report_loss(dispatcher, task_id)
    resp = await dispatcher.client.get("/v1/emergencies", headers=await dispatcher.headers("supervisor", "3301"))
    assert resp.status_code == 200
    [item] = resp.json()["items"]
    assert item["task_id"] == task_id and item["tier"] == "high" and item["region"] == "330106"
    assert item["due_at"] and item["reported_at"].startswith("2026-11-21T02:03:00")
    stop = item["payment_stop"]
    assert stop["status"] == "requested" and stop["reported_via"] == "feedback"
    assert stop["reported_by"].endswith("test-officer-33")
    # The operator call is first in line, and nothing else waits on a queue nobody reads.
    assert [j["priority"] for j in await dispatcher.jobs(task_id=task_id, kind="call.operator")] == [0]
    assert await dispatcher.jobs(queue="liaison") == []


async def test_dissuaded_and_acknowledged_are_refused_on_an_emergency(dispatcher) -> None:
    """An emergency cannot be closed as dissuaded or acknowledged: 409 with the reason, and the task stays open."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    for outcome in ("dissuaded", "acknowledged"):
        resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": outcome},
                                            headers=await dispatcher.headers("supervisor", "33"))
        assert resp.status_code == 409
        assert "emergency" in resp.json()["detail"] and "nothing left to dissuade" in resp.json()["detail"]
        assert "payment stop" in resp.json()["detail"]
    # Closing it as unreachable would drop the loss from the record too.
    resp = await dispatcher.client.post(f"/v1/tasks/{task_id}/feedback", json={"outcome": "unreachable"},
                                        headers=await dispatcher.headers("supervisor", "33"))
    assert resp.status_code == 409
    task = await get_task(dispatcher, task_id)
    assert task["status"] == "in_progress" and task["outcome"] is None


async def test_payment_stop_lifecycle_closes_the_task_with_the_amounts(dispatcher) -> None:
    """requested → sent → confirmed: each step audited; confirmed closes the task as loss_reported with the amounts."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    details = await move(dispatcher, task_id, bank="中国工商银行", account="6222020000001234", amount_lost="50000",
                         transferred_at="2026-11-21T09:58:00+08:00")
    assert details.status_code == 200 and details.json()["payment_stop"]["status"] == "requested"
    assert details.json()["payment_stop"]["amount_lost"] == "50000.00"
    dispatcher.clock.advance(minutes=10)
    sent = await move(dispatcher, task_id, status="sent", note="已发工行")
    assert sent.status_code == 200 and sent.json()["payment_stop"]["status"] == "sent"
    assert sent.json()["payment_stop"]["sent_at"].startswith("2026-11-21T02:10:00")
    dispatcher.clock.advance(minutes=20)
    confirmed = await move(dispatcher, task_id, status="confirmed", amount_stopped="48000.50",
                           reference="ICBC-ZF-0042")
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["payment_stop"]["status"] == "confirmed" and body["payment_stop"]["amount_stopped"] == "48000.50"
    assert body["task_status"] == "closed" and body["outcome"] == "loss_reported"

    task = await get_task(dispatcher, task_id)
    assert task["status"] == "closed" and task["outcome"] == "loss_reported"
    entries = await audit_bodies(dispatcher, task_id, "payment_stop.")
    assert [a for a, _, _ in entries] == ["payment_stop.requested", "payment_stop.details", "payment_stop.sent",
                                          "payment_stop.confirmed"]
    assert all(actor.startswith("key:") for _, actor, _ in entries)
    final = entries[-1][2]
    assert final["amount_stopped"] == "48000.50" and final["reference"] == "ICBC-ZF-0042"
    assert final["amount_lost"] == "50000.00" and final["closes_task"] == "loss_reported"
    closed = await audit_bodies(dispatcher, task_id, "task.closed")
    assert closed[0][2]["after"] == {"status": "closed", "outcome": "loss_reported"}
    # No longer open: off the list, and a further move is a conflict naming the status.
    listed = await dispatcher.client.get("/v1/emergencies", headers=await dispatcher.headers("supervisor", "33"))
    assert listed.json()["items"] == []
    again = await move(dispatcher, task_id, status="failed")
    assert again.status_code == 409 and "'confirmed'" in again.json()["detail"]


async def test_a_failed_stop_closes_the_task_with_nothing_stopped(dispatcher) -> None:
    """sent → failed closes the task as loss_reported; the amount stopped is 0."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    assert (await move(dispatcher, task_id, status="sent")).status_code == 200
    failed = await move(dispatcher, task_id, status="failed", note="资金已被转出")
    assert failed.status_code == 200
    assert failed.json()["payment_stop"]["amount_stopped"] == "0.00" and failed.json()["outcome"] == "loss_reported"
    assert (await audit_bodies(dispatcher, task_id, "payment_stop.failed"))[0][2]["amount_stopped"] == "0.00"


async def test_backwards_and_skipped_moves_are_refused(dispatcher) -> None:
    """requested → confirmed skips 'sent', sent → requested goes back: 409 naming the current status, nothing changes."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    skip = await move(dispatcher, task_id, status="confirmed", amount_stopped="1", reference="R1")
    assert skip.status_code == 409 and "is 'requested'" in skip.json()["detail"]
    same = await move(dispatcher, task_id, status="requested")
    assert same.status_code == 409 and "is 'requested'" in same.json()["detail"]
    await move(dispatcher, task_id, status="sent")
    back = await move(dispatcher, task_id, status="requested")
    assert back.status_code == 409 and "is 'sent'" in back.json()["detail"]
    assert [a for a, _, _ in await audit_bodies(dispatcher, task_id, "payment_stop.")] == [
        "payment_stop.requested", "payment_stop.sent"]


async def test_bad_payment_stop_input_is_422_naming_the_field(dispatcher) -> None:
    """Confirmed needs amount_stopped ≥ 0 and a reference; unknown statuses and fields are refused by name."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    await move(dispatcher, task_id, status="sent")
    cases = [
        ({"status": "confirmed", "reference": "R1"}, "amount_stopped"),
        ({"status": "confirmed", "amount_stopped": "10"}, "reference"),
        ({"status": "confirmed", "amount_stopped": "-1", "reference": "R1"}, "amount_stopped"),
        ({"status": "confirmed", "amount_stopped": "lots", "reference": "R1"}, "amount_stopped"),
        ({"status": "done"}, "status"),
        ({"status": "failed", "amount_stopped": "5"}, "amount_stopped"),
        ({"status": "sent", "colour": "red"}, "colour"),
        ({}, "status"),
    ]
    for body, field in cases:
        resp = await move(dispatcher, task_id, **body)
        assert resp.status_code == 422, (body, resp.text)
        assert field in [e["field"] for e in resp.json()["errors"]], (body, resp.json())
    stop = (await dispatcher.client.get(f"/v1/emergencies/{task_id}",
                                        headers=await dispatcher.headers("supervisor", "33"))).json()
    assert stop["payment_stop"]["status"] == "sent"


async def test_another_units_emergency_is_invisible(dispatcher) -> None:
    """A supervisor of another city neither sees nor moves it (404); operators cannot move it (403)."""
    task_id = await new_task(dispatcher, region="330106")
    await report_loss(dispatcher, task_id)
    other = await dispatcher.client.get("/v1/emergencies", headers=await dispatcher.headers("supervisor", "3302"))
    assert other.status_code == 200 and other.json()["items"] == []
    assert (await dispatcher.client.get(f"/v1/emergencies/{task_id}",
                                        headers=await dispatcher.headers("supervisor", "3302"))).status_code == 404
    assert (await move(dispatcher, task_id, unit="3302", status="sent")).status_code == 404
    assert (await move(dispatcher, task_id, unit="3301", role="operator", status="sent")).status_code == 403
    assert (await dispatcher.client.get("/v1/emergencies",
                                        headers=await dispatcher.headers("ingest", "33"))).status_code == 403
    # A task that is not an emergency has no payment stop to move.
    calm = await new_task(dispatcher, phone="13900000077")
    assert (await move(dispatcher, calm, status="sent")).status_code == 404
    # The read function the callcenter uses follows the same rule.
    async with dispatcher.sessionmaker() as session:
        assert [e.task_id for e in await dispatcher_contract.open_emergencies(session, "3301")] == [
            uuid.UUID(task_id)]
        assert await dispatcher_contract.open_emergencies(session, "3302") == []


async def test_a_dissuaded_disposition_on_an_emergency_is_recorded_and_leaves_it_open(dispatcher) -> None:
    """A channel result that tries to close an emergency as dissuaded: the worker records it and the task stays open."""
    task_id = await new_task(dispatcher)
    await report_loss(dispatcher, task_id)
    result = contracts.ChannelResult(task_id=task_id, channel="operator_call", attempt=1, result="disposition",
                                     disposition="dissuaded", actor="key:abc:seat-7", note="劝住了")
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [result.to_job(now=dispatcher.clock.now())])
    await dispatcher.run_dispatcher_jobs()
    task = await get_task(dispatcher, task_id)
    assert task["status"] == "in_progress" and task["outcome"] is None
    refused = [e for e in task["events"] if e["type"] == "task.outcome_refused"]
    assert refused and refused[0]["actor"] == "key:abc:seat-7" and refused[0]["detail"]["outcome"] == "dissuaded"
    # The job finished (not retried, not dead-lettered).
    assert await dispatcher.jobs(kind="task.channel_result") == []


async def test_a_loss_disposition_fills_in_the_payment_stop(dispatcher) -> None:
    """An operator's loss_reported disposition opens the emergency with what the citizen said about the transfer."""
    task_id = await new_task(dispatcher)
    result = contracts.ChannelResult(
        task_id=task_id, channel="operator_call", attempt=1, result="disposition", disposition="loss_reported",
        actor="key:abc:seat-7", loss=contracts.LossDetails(bank="建设银行", amount_lost="1200"))
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [result.to_job(now=dispatcher.clock.now())])
    await dispatcher.run_dispatcher_jobs()
    stop = (await dispatcher.client.get(f"/v1/emergencies/{task_id}",
                                        headers=await dispatcher.headers("supervisor", "33"))).json()["payment_stop"]
    assert stop["reported_via"] == "disposition" and stop["bank"] == "建设银行" and stop["amount_lost"] == "1200.00"
    assert stop["reported_by"] == "key:abc:seat-7"


async def test_emergency_routes_are_documented(dispatcher) -> None:
    """OpenAPI lists the emergency routes with their models and every status they answer."""
    spec = (await dispatcher.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/emergencies/{task_id}/payment-stop"]["post"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(post["responses"])
    assert "EmergencyOut" in str(post["responses"]["200"]) and "PaymentStopIn" in str(post["requestBody"])
    assert "EmergencyList" in str(spec["paths"]["/v1/emergencies"]["get"]["responses"]["200"])


async def test_a_visit_reports_loss_through_apply_feedback(dispatcher) -> None:
    """The call a visit report makes (tasks.service.apply_feedback): loss_reported opens the emergency via 'visit';
    dissuaded afterwards raises a TaskClosed (the 409 every feedback path already answers)."""
    task_id = uuid.UUID(await new_task(dispatcher))
    officer = "key:0ff1ce:officer-330106"
    async with transaction(dispatcher.sessionmaker) as session:
        task = await tasks.lock_task(session, task_id)
        result = await tasks.apply_feedback(session, task, outcome="loss_reported", actor=officer, note="上门核实",
                                            now=dispatcher.clock.now(), store=dispatcher.runtime.store,
                                            by_person=True, via="visit")
    assert result.action == "emergency"
    async with transaction(dispatcher.sessionmaker) as session:
        task = await tasks.lock_task(session, task_id)
        with pytest.raises(tasks.TaskClosed, match="cannot be closed as 'dissuaded'"):
            await tasks.apply_feedback(session, task, outcome="dissuaded", actor=officer, note=None,
                                       now=dispatcher.clock.now(), store=dispatcher.runtime.store, by_person=True)
    stop = (await dispatcher.client.get(f"/v1/emergencies/{task_id}",
                                        headers=await dispatcher.headers("officer", "330106"))).json()
    assert stop["payment_stop"]["reported_via"] == "visit" and stop["payment_stop"]["reported_by"] == officer
    assert stop["task_status"] == "in_progress"
