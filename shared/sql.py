"""Bulk statements: a whole batch of rows passed as one JSON document.

Why: asyncpg encodes array parameters element by element in Python-facing
code; for a 1,000-record batch (about 50,000 values over six tables) that was
the largest single cost in the ingest profile. orjson encodes the same rows
into one string in C, and PostgreSQL's `jsonb_to_recordset` turns it back into
typed rows on the database's core, which has the spare capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import TextClause, text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if type(value).__name__ == "UUID":  # asyncpg's own UUID type (ids read back from the database)
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} for a recordset")


def dumps(value: Any) -> bytes:
    """orjson with the few types our rows carry (Decimal, asyncpg's UUID)."""
    return orjson.dumps(value, default=_default)


def recordset(rows: Iterable[Mapping[str, Any]]) -> str:
    """JSON text of a list of rows, for `jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(col type, ...)`."""
    return orjson.dumps(list(rows), default=_default).decode()


@lru_cache(maxsize=512)
def sql(statement: str) -> TextClause:
    """`text(statement)`, built once per distinct statement.

    Building a TextClause parses its bind parameters and its cache key on every
    call; on the single-warning path that was about 6% of the CPU.
    """
    return text(statement)
