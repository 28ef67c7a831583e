"""The "I already transferred money" button (Telegram sandbox) makes the task an emergency with its payment stop."""

from __future__ import annotations

from tests.bot.test_bot import alert_for, press, task_of


async def test_the_loss_button_opens_an_emergency_listed_for_the_supervisors(bot) -> None:
    """Pressing the loss button: emergency, payment stop requested via the button, listed; acknowledging later is refused."""
    chat_id = await bot.bind()
    answer, alert = await alert_for(bot, chat_id)
    await press(bot, chat_id, alert, 1)
    task = await task_of(bot, answer["task_id"])
    assert task["emergency_at"] and task["tier"] == "high"
    d = bot.dispatcher
    listed = (await d.client.get("/v1/emergencies", headers=await d.headers("supervisor", "3301"))).json()["items"]
    assert [e["task_id"] for e in listed] == [answer["task_id"]]
    stop = listed[0]["payment_stop"]
    assert stop["status"] == "requested" and stop["reported_via"] == "button"
    assert stop["reported_by"] == f"citizen:telegram:{chat_id}"
    refused = await d.client.post(f"/v1/tasks/{answer['task_id']}/feedback", json={"outcome": "acknowledged"},
                                  headers=await d.headers("operator", "3301"))
    assert refused.status_code == 409 and "emergency" in refused.json()["detail"]
