"""aiogram FSM storage in PostgreSQL: the /report dialogue survives a restart and moves between replicas.

Each call is its own short transaction through the bot's sessionmaker (no
transaction is held while the handler talks to Telegram). A dialogue untouched
for `ttl_s` reads as finished: a citizen who walked away yesterday starts
afresh, and `sweep` deletes such rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import transaction
from shared.sql import sql

DIALOGUE_TTL_S = 24 * 3600.0

_KEY = ("bot_id = :bot_id AND chat_id = :chat_id AND user_id = :user_id AND thread_id = :thread_id"
        " AND business_connection_id = :bc AND destiny = :destiny")
_COLUMNS = "bot_id, chat_id, user_id, thread_id, business_connection_id, destiny"
_VALUES = ":bot_id, :chat_id, :user_id, :thread_id, :bc, :destiny"
_FRESH = "updated_at >= now() - make_interval(secs => :ttl_s)"
# On an upsert, a stale row's other half (its data when the state is set, and so on) is forgotten, as a read
# of it would be.
_STALE = "bot_dialogues.updated_at < now() - make_interval(secs => :ttl_s)"


def _params(key: StorageKey, ttl_s: float) -> dict[str, Any]:
    return {"bot_id": key.bot_id, "chat_id": key.chat_id, "user_id": key.user_id, "thread_id": key.thread_id or 0,
            "bc": key.business_connection_id or "", "destiny": key.destiny, "ttl_s": ttl_s}


def _json(value: Any) -> dict[str, Any]:
    # Through text() the asyncpg dialect hands jsonb back as its text.
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value or {})


class PostgresStorage(BaseStorage):
    """aiogram's BaseStorage over the bot_dialogues table."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, ttl_s: float = DIALOGUE_TTL_S) -> None:
        self.sessionmaker = sessionmaker
        self.ttl_s = ttl_s

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        async with transaction(self.sessionmaker) as session:
            await session.execute(sql(
                f"INSERT INTO bot_dialogues ({_COLUMNS}, state) VALUES ({_VALUES}, :state)"
                f" ON CONFLICT ({_COLUMNS}) DO UPDATE SET state = EXCLUDED.state, updated_at = now(),"
                f" data = CASE WHEN {_STALE} THEN '{{}}'::jsonb ELSE bot_dialogues.data END"),
                {**_params(key, self.ttl_s), "state": value})
            await _forget_if_empty(session, key, self.ttl_s)

    async def get_state(self, key: StorageKey) -> str | None:
        async with transaction(self.sessionmaker) as session:
            return (await session.execute(sql(f"SELECT state FROM bot_dialogues WHERE {_KEY} AND {_FRESH}"),
                                          _params(key, self.ttl_s))).scalar()

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        async with transaction(self.sessionmaker) as session:
            await session.execute(sql(
                f"INSERT INTO bot_dialogues ({_COLUMNS}, data) VALUES ({_VALUES}, CAST(:data AS jsonb))"
                f" ON CONFLICT ({_COLUMNS}) DO UPDATE SET data = EXCLUDED.data, updated_at = now(),"
                f" state = CASE WHEN {_STALE} THEN NULL ELSE bot_dialogues.state END"),
                {**_params(key, self.ttl_s), "data": orjson.dumps(dict(data)).decode()})
            await _forget_if_empty(session, key, self.ttl_s)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        async with transaction(self.sessionmaker) as session:
            return _json((await session.execute(sql(f"SELECT data FROM bot_dialogues WHERE {_KEY} AND {_FRESH}"),
                                                _params(key, self.ttl_s))).scalar())

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        """One statement (the base class reads then writes): two updates of one dialogue never lose each other's keys."""
        async with transaction(self.sessionmaker) as session:
            merged = (await session.execute(sql(
                f"INSERT INTO bot_dialogues ({_COLUMNS}, data) VALUES ({_VALUES}, CAST(:data AS jsonb))"
                f" ON CONFLICT ({_COLUMNS}) DO UPDATE SET updated_at = now(),"
                f" data = CASE WHEN {_STALE} THEN '{{}}'::jsonb ELSE bot_dialogues.data END || EXCLUDED.data,"
                f" state = CASE WHEN {_STALE} THEN NULL ELSE bot_dialogues.state END"
                f" RETURNING data"), {**_params(key, self.ttl_s), "data": orjson.dumps(dict(data)).decode()})).scalar()
        return _json(merged)

    async def close(self) -> None:
        """Nothing to close: the sessionmaker's engine belongs to the app."""


async def _forget_if_empty(session: AsyncSession, key: StorageKey, ttl_s: float) -> None:
    # A cleared dialogue (state.clear() sets both halves empty) leaves no row behind.
    await session.execute(sql(f"DELETE FROM bot_dialogues WHERE {_KEY} AND state IS NULL AND data = '{{}}'::jsonb"),
                          _params(key, ttl_s))


async def sweep(session: AsyncSession, *, ttl_s: float = DIALOGUE_TTL_S) -> int:
    """Delete the dialogues untouched for ttl_s (they already read as finished); returns how many."""
    result = await session.execute(sql("DELETE FROM bot_dialogues WHERE updated_at < now() - make_interval(secs => :ttl_s)"),
                                   {"ttl_s": ttl_s})
    return result.rowcount or 0
