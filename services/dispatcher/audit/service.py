"""Searching the dispatch log (the API's GET /v1/audit and the console's audit page share this). Read-only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.sql import sql


async def search(session: AsyncSession, *, unit: str, task_id: uuid.UUID | None = None,
                 case_id: uuid.UUID | None = None, actor: str | None = None, action: str | None = None,
                 from_: datetime | None = None, to: datetime | None = None, cursor: int | None = None,
                 limit: int = 100, newest_first: bool = False) -> tuple[list[Any], int | None]:
    """Entries in `unit` matching every filter given; returns (page, next cursor or None).

    Entries with no region are visible to nationwide keys only. Oldest first for
    the API (a cursor walks forward); newest first for the console.
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if cursor:
        where.append("seq < :cursor" if newest_first else "seq > :cursor")
        params["cursor"] = cursor
    if unit:
        where.append("region_code LIKE :unit")
        params["unit"] = unit + "%"
    for column, value in (("task_id", task_id), ("case_id", case_id), ("actor", actor), ("action", action)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if from_ is not None:
        where.append("at >= :from_")
        params["from_"] = from_
    if to is not None:
        where.append("at < :to")
        params["to"] = to
    statement = ("SELECT seq, at, actor, action, task_id, case_id, region_code, body, hash FROM audit_log"
                 + (" WHERE " + " AND ".join(where) if where else "")
                 + f" ORDER BY seq {'DESC' if newest_first else ''} LIMIT :limit")
    rows = (await session.execute(sql(statement), params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more else None)
