"""Bot replicas: the /report dialogue survives a restart, and only one replica long-polls at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from sqlalchemy import text

from services.bot.app import create_app as create_bot
from services.bot.settings import BotSettings
from tests.bot.conftest import BotHarness, eventually

URL_NOTE = "http://fake-bank.example/login"
HELP_NEEDLE = "/report 举报线索"  # only the /help answer says this


@asynccontextmanager
async def running_bot(sandbox, dispatcher, **settings: object) -> AsyncIterator[BotHarness]:  # noqa: ANN001
    """A whole bot app (polling the sandbox) from start to stop, as one replica is."""
    app = create_bot(BotSettings(DATABASE_URL=dispatcher.db_url, TELEGRAM_API_BASE=sandbox.base,
                                 SHOUHU_BOT_WORKER=False, SHOUHU_BOT_POLLING_LEADER_RETRY_S=0.2, **settings),
                     clock=dispatcher.clock)
    async with app.router.lifespan_context(app):
        yield BotHarness(app, sandbox, dispatcher)


async def last_text(sandbox, chat_id: int, needle: str) -> str | None:  # noqa: ANN001
    messages = await sandbox.messages(chat_id)
    last = messages[-1]["text"] if messages else ""
    return last if needle in last else None


async def inline_message(sandbox, chat_id: int) -> dict | None:  # noqa: ANN001
    for m in reversed(await sandbox.messages(chat_id)):
        if (m.get("reply_markup") or {}).get("inline_keyboard"):
            return m
    return None


async def test_a_half_written_report_continues_after_a_restart(sandbox, dispatcher) -> None:  # noqa: ANN001
    """A citizen half-way through /report when the bot restarts finishes it with the new process."""
    async with running_bot(sandbox, dispatcher) as first:
        chat_id = await first.bind()
        await sandbox.say(chat_id, "/report")
        kinds = await eventually(lambda: inline_message(sandbox, chat_id))
        await sandbox.press(chat_id, kinds["message_id"], "rk:url")
        await eventually(lambda: last_text(sandbox, chat_id, "网址"))
        async with first.app.state.sessionmaker() as session:
            stored = (await session.execute(text("SELECT state, data FROM bot_dialogues WHERE chat_id = :c"),
                                            {"c": chat_id})).one()
        assert stored.state == "Report:value" and stored.data["kind"] == "url"

    async with running_bot(sandbox, dispatcher) as second:
        await sandbox.say(chat_id, URL_NOTE)
        await eventually(lambda: last_text(sandbox, chat_id, "说明"))
        await sandbox.say(chat_id, "收到短信说账户冻结")
        done = await eventually(lambda: last_text(sandbox, chat_id, "XS"))
        ref = "XS" + done.split("XS", 1)[1][:15]
        async with second.app.state.sessionmaker() as session:
            left = (await session.execute(text("SELECT count(*) FROM bot_dialogues WHERE chat_id = :c"),
                                          {"c": chat_id})).scalar()
        assert left == 0  # a finished dialogue leaves no row

    await dispatcher.run_dispatcher_jobs()
    clues = (await dispatcher.client.get("/v1/clues", headers=await dispatcher.headers("supervisor", ""))
             ).json()["items"]
    assert [(c["ref"], c["kind"], c["value"]) for c in clues] == [(ref, "url", URL_NOTE)]


async def test_a_stale_dialogue_reads_as_finished(sandbox, dispatcher) -> None:  # noqa: ANN001
    """A /report left for longer than the dialogue TTL is forgotten: the citizen's next text starts nothing."""
    async with running_bot(sandbox, dispatcher, SHOUHU_BOT_DIALOGUE_TTL_S=3600) as bot:
        chat_id = await bot.bind()
        await sandbox.say(chat_id, "/report")
        kinds = await eventually(lambda: inline_message(sandbox, chat_id))
        await sandbox.press(chat_id, kinds["message_id"], "rk:url")
        await eventually(lambda: last_text(sandbox, chat_id, "网址"))
        async with bot.app.state.sessionmaker() as session, session.begin():
            await session.execute(text("UPDATE bot_dialogues SET updated_at = now() - interval '2 hours'"
                                       " WHERE chat_id = :c"), {"c": chat_id})
        before = len(await sandbox.messages(chat_id))
        await sandbox.say(chat_id, URL_NOTE)
        await sandbox.say(chat_id, "/help")  # answered, so the note above has been handled by then
        await eventually(lambda: _count_above(sandbox, chat_id, before))
        assert not any("说明" in m["text"] for m in (await sandbox.messages(chat_id))[before:])


async def _count_above(sandbox, chat_id: int, count: int) -> bool:  # noqa: ANN001
    return len(await sandbox.messages(chat_id)) > count


async def test_one_replica_polls_and_another_takes_over_when_it_stops(sandbox, dispatcher) -> None:  # noqa: ANN001
    """Two bots on one token: only the lock holder polls (no 409s), and when it stops the other answers."""
    async with AsyncExitStack() as stack:
        cms = [running_bot(sandbox, dispatcher), running_bot(sandbox, dispatcher)]
        replicas = [await stack.enter_async_context(cm) for cm in cms]
        await eventually(lambda: _leaders(replicas))
        await asyncio.sleep(1.0)  # five retry rounds: the follower stays a follower
        leaders = await _leaders(replicas)
        assert len(leaders) == 1
        chat_id = await replicas[0].bind()  # answered by whichever leads
        stats = await sandbox.call("GET", "/stats")
        assert sum(b["polls_conflicted_409"] for b in stats["bots"].values()) == 0

        leading = replicas.index(leaders[0])
        await cms[leading].__aexit__(None, None, None)  # the stack's exit of it later does nothing
        await eventually(lambda: _leaders([replicas[1 - leading]]))
        await sandbox.say(chat_id, "/help")
        await eventually(lambda: last_text(sandbox, chat_id, HELP_NEEDLE))


async def _leaders(replicas: list[BotHarness]) -> list[BotHarness]:
    return [r for r in replicas if r.app.state.leader.leading]


async def test_concurrent_updates_of_one_dialogue_keep_every_key(sandbox, dispatcher) -> None:  # noqa: ANN001
    """update_data is one upsert: twenty concurrent updates of one dialogue lose none of each other's keys."""
    from aiogram.fsm.storage.base import StorageKey

    from services.bot.dialogues.storage import PostgresStorage

    async with running_bot(sandbox, dispatcher, SHOUHU_BOT_POLLING=False) as bot:
        storage = PostgresStorage(bot.app.state.sessionmaker)
        key = StorageKey(bot_id=1, chat_id=42, user_id=42)
        await asyncio.gather(*(storage.update_data(key, {f"k{i}": i}) for i in range(20)))
        assert await storage.get_data(key) == {f"k{i}": i for i in range(20)}
        await storage.set_state(key, "Report:value")
        assert await storage.get_state(key) == "Report:value"


async def test_a_leader_whose_lock_connection_dies_gives_way(sandbox, dispatcher, sessionmaker) -> None:  # noqa: ANN001
    """The lock's connection killed under the polling replica: polling resumes under a fresh lock, one poller."""
    async with AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(running_bot(sandbox, dispatcher)) for _ in range(2)]
        chat_id = await sandbox.citizen("+8613800138000")
        [leader] = await eventually(lambda: _leaders(replicas))
        killed_pid = leader.app.state.leader.backend_pid
        async with sessionmaker() as session:  # the owner's connection, which may end a service backend
            assert (await session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": killed_pid})).scalar()

        async def new_leader() -> list[BotHarness]:
            leaders = await _leaders(replicas)
            return leaders if leaders and leaders[0].app.state.leader.backend_pid not in (None, killed_pid) else []

        await eventually(new_leader)
        await sandbox.say(chat_id, "/help")
        await eventually(lambda: last_text(sandbox, chat_id, HELP_NEEDLE))
        assert len(await _leaders(replicas)) == 1
