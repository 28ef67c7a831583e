"""Queries behind the supervisor console's pages (read-only unless named otherwise). Callers own the session."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.console.web import LOCAL_TZ
from shared.sql import sql

_DAILY = sql(
    "SELECT (due_at AT TIME ZONE :tz)::date AS day, count(*) AS due,"
    " count(*) FILTER (WHERE status = 'closed' AND closed_at <= due_at) AS in_time,"
    " count(*) FILTER (WHERE breached OR (status = 'closed' AND closed_at > due_at)) AS breached"
    " FROM tasks WHERE region_code LIKE :unit AND due_at >= :from_ AND due_at < :to GROUP BY 1"
)


async def daily_compliance(session: AsyncSession, *, unit: str, now: datetime, days: int) -> list[dict[str, Any]]:
    """Per local day, the last `days` days up to now: tasks due so far, closed in time, breached, the rate."""
    today = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    rows = {r.day: r for r in (await session.execute(
        _DAILY, {"tz": str(LOCAL_TZ), "unit": unit + "%", "from_": start, "to": now})).all()}
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).date()
        row = rows.get(day)
        due = row.due if row else 0
        in_time = row.in_time if row else 0
        out.append({"day": day, "label": day.strftime("%m-%d"), "due": due, "in_time": in_time,
                    "breached": row.breached if row else 0,
                    "rate": round(in_time / due, 4) if due else None})
    return out
