"""Rate limits every replica shares, kept in PostgreSQL: tokens, turns and paces, on the database's clock.

Why our own module: the providers' limits (Telegram: 30 messages/s per bot,
1/s per chat; Twilio: 1 new call/s per account) must hold across replicas, and
no maintained library we could find does that the way they need here:
- pyrate-limiter (installed, v4) has a PostgresBucket, but it counts an item
  when it is *acquired* (a sliding log of timestamps), so it cannot give a
  token back "one second after the response", which is what keeps arrivals at
  Telegram within the limit whatever the network does (see
  services/bot/alerts/limiter.py); it creates its tables at run time (the
  services' role may not: shared/db_roles.py), serialises every acquisition
  with LOCK TABLE ... NOWAIT, has one table per bucket (not one row per chat)
  and no notion of lanes (alerts before publicity), and runs on psycopg's sync
  pool, beside our asyncpg engine.
- aiolimiter, limits, asyncio throttlers: in process memory (or Redis, which we
  do not run); the bug this replaces is exactly "every limiter is per process".

Three shapes, each a few short statements in autocommit (never inside a
caller's transaction, never across a network call):
- Tokens (`rate_tokens`, N rows per bucket): take = one UPDATE of a free row
  chosen with FOR UPDATE SKIP LOCKED, busy for a crash lease (so a replica that
  dies holding one frees it within seconds); give back = busy for `hold_s` more
  from now. A lane may use only the first `slots` tokens (publicity 20 of 30,
  alerts all), and takes from its end of the row order, so lanes meet last.
- Turns (`rate_turns`, one row per key, e.g. a chat): one holder at a time; the
  next may start `hold_s` after the release; a 429's retry_after pushes it out.
- Paces (`rate_paces`, one row per key): `next_at` moves on by the interval in
  one UPDATE ... RETURNING; the caller sleeps until its own start.
Every time is the database's (clock_timestamp()), so replicas agree; the
caller only ever sleeps for a duration the database computed.

Waiting is not a hot loop: a refused take reads, in the same statement, when
the earliest token or the turn frees, and sleeps until then (capped, since a
held token's time is its lease, and it usually comes back sooner). Within one
process one waiter per (bucket, lane) asks the database at a time, the rest
queue behind it in order, so a thousand waiting sends cost one statement per
freed token, not a thousand. A lower lane looks again `wake_delay_s` later than
a higher one, so when a token frees, a waiting alert takes it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from shared.db import plain_url, raw_connect

log = structlog.get_logger(__name__)

TOKENS, TURNS = "rate_tokens", "rate_turns"


@dataclass(frozen=True)
class Lane:
    """Who may take which tokens: `slots` of the bucket's first tokens (None: all); lower lanes wake later."""

    name: str
    slots: int | None = None
    wake_delay_s: float = 0.0


@dataclass(frozen=True)
class Held:
    table: str  # TOKENS or TURNS
    bucket: str
    key: int  # the token's slot, or the turn's key
    holder: int


_TAKE_TOKEN = """
WITH free AS (
    SELECT slot FROM rate_tokens
    WHERE bucket = $1 AND slot < $2 AND busy_until <= clock_timestamp()
    ORDER BY slot * $3 LIMIT 1 FOR UPDATE SKIP LOCKED
), took AS (
    UPDATE rate_tokens t SET busy_until = clock_timestamp() + make_interval(secs => $4), holder = $5
    FROM free WHERE t.bucket = $1 AND t.slot = free.slot AND t.busy_until <= clock_timestamp()
    RETURNING t.slot
)
SELECT (SELECT slot FROM took) AS slot,
       (SELECT CAST(EXTRACT(EPOCH FROM min(busy_until) - clock_timestamp()) AS float8) FROM rate_tokens
        WHERE bucket = $1 AND slot < $2) AS wait_s
"""

_ENSURE_TOKENS = """
INSERT INTO rate_tokens (bucket, slot, busy_until)
SELECT CAST($1 AS varchar), g, TIMESTAMPTZ 'epoch' FROM generate_series(0, CAST($2 AS int) - 1) AS g
ON CONFLICT DO NOTHING
"""

# ON CONFLICT DO UPDATE ... WHERE sees the row's latest version (it waits for a concurrent taker to commit);
# the outer read uses the statement's snapshot, which is enough to know how long to sleep.
_TAKE_TURN = """
WITH took AS (
    INSERT INTO rate_turns AS r (bucket, key, busy_until, holder)
    VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3), $4)
    ON CONFLICT (bucket, key) DO UPDATE SET busy_until = EXCLUDED.busy_until, holder = EXCLUDED.holder
    WHERE r.busy_until <= clock_timestamp()
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM took) AS took,
       (SELECT CAST(EXTRACT(EPOCH FROM busy_until - clock_timestamp()) AS float8) FROM rate_turns
        WHERE bucket = $1 AND key = $2) AS wait_s
"""

_PUSH_TURN = """
INSERT INTO rate_turns AS r (bucket, key, busy_until)
VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (bucket, key) DO UPDATE SET busy_until = GREATEST(r.busy_until, EXCLUDED.busy_until)
"""

_NEXT_START = """
INSERT INTO rate_paces AS p (key, next_at) VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (key) DO UPDATE
    SET next_at = GREATEST(p.next_at, clock_timestamp()) + make_interval(secs => $2)
RETURNING CAST(EXTRACT(EPOCH FROM p.next_at - make_interval(secs => $2) - clock_timestamp()) AS float8)
"""


class SharedLimits:
    """The shared tokens, turns and paces, over a small asyncpg pool of their own (statements in autocommit).

    A pool of their own: these are a few tiny statements per message, and on the service's SQLAlchemy pool
    each would also cost a pre-ping and a checkout behind the jobs' transactions (the bot's fan-out ran at
    half its rate that way on a loaded machine).
    """

    def __init__(self, url: str, *, pool_size: int = 4, application_name: str = "shouhu-ratelimit",
                 lease_s: float = 6.0, max_sleep_s: float = 0.5, min_sleep_s: float = 0.003) -> None:
        self.url = plain_url(url)
        self.pool_size = pool_size
        self.application_name = application_name
        # A holder that dies frees its token or turn this long after its last heartbeat (lease_s / 3 apart).
        self.lease_s = lease_s
        self.max_sleep_s = max_sleep_s
        self.min_sleep_s = min_sleep_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._ensured: set[tuple[str, int]] = set()
        self._heads: dict[tuple[str, str], asyncio.Lock] = {}

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    async def connect(*_: object, **kwargs: Any) -> asyncpg.Connection:
                        return await raw_connect(self.url, connection_class=kwargs["connection_class"],
                                                 record_class=kwargs["record_class"], timeout=5.0,
                                                 server_settings={"application_name": self.application_name})

                    self._pool = await asyncpg.create_pool(min_size=1, max_size=self.pool_size, connect=connect)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _row(self, statement: str, *args: Any) -> Any:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await conn.fetchrow(statement, *args)

    async def _run(self, statement: str, *args: Any) -> str:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await conn.execute(statement, *args)

    def _sleep_s(self, wait_s: float | None, lane: Lane | None = None) -> float:
        wait = self.min_sleep_s if wait_s is None else min(max(wait_s, self.min_sleep_s), self.max_sleep_s)
        return wait + (lane.wake_delay_s if lane else 0.0)

    # ---- tokens ----

    async def take_token(self, bucket: str, *, size: int, lane: Lane) -> Held:
        """Wait for one of the bucket's `size` tokens that `lane` may use; held until `give_back`."""
        if (bucket, size) not in self._ensured:
            await self._run(_ENSURE_TOKENS, bucket, size)
            self._ensured.add((bucket, size))
        slots = min(size, lane.slots) if lane.slots else size
        # Lanes limited to the first tokens take from the front; the others from the back, so they meet last.
        direction = 1 if lane.slots else -1
        head = self._heads.setdefault((bucket, lane.name), asyncio.Lock())
        async with head:  # one asker per bucket and lane in this process; the rest wait here in order
            while True:
                holder = random.getrandbits(62)
                row = await self._row(_TAKE_TOKEN, bucket, slots, direction, self.lease_s, holder)
                if row["slot"] is not None:
                    return Held(TOKENS, bucket, row["slot"], holder)
                await asyncio.sleep(self._sleep_s(row["wait_s"], lane))

    # ---- turns ----

    async def take_turn(self, bucket: str, key: int) -> Held:
        """Wait for `key`'s turn (nobody holds it and its last release was long enough ago)."""
        while True:
            holder = random.getrandbits(62)
            row = await self._row(_TAKE_TURN, bucket, key, self.lease_s, holder)
            if row["took"]:
                return Held(TURNS, bucket, key, holder)
            await asyncio.sleep(self._sleep_s(row["wait_s"]))

    async def push_turn(self, bucket: str, key: int, *, hold_s: float) -> None:
        """No turn for `key` before `hold_s` from now (a 429's retry_after), whoever holds it."""
        await self._run(_PUSH_TURN, bucket, key, float(hold_s))

    async def sweep_turns(self, *, idle_s: float = 3600.0) -> int:
        """Delete turns free for `idle_s` (one row per chat ever written to would grow without end)."""
        status = await self._run(
            "DELETE FROM rate_turns WHERE busy_until < clock_timestamp() - make_interval(secs => $1)", float(idle_s))
        return int(status.split()[-1])

    # ---- both ----

    async def give_back(self, *, token: Held | None = None, token_hold_s: float = 1.0, turn: Held | None = None,
                        turn_hold_s: float = 0.0) -> None:
        """Release a token and/or a turn in one statement: each free again its `hold_s` from now.

        A holder whose lease ran out (and someone else took it) changes nothing. Never raises: a release that
        cannot reach the database leaves the lease to run out, which frees it all the same.
        """
        parts: list[str] = []
        args: list[Any] = []
        if token is not None:
            parts.append(f"tok AS (UPDATE rate_tokens SET busy_until = clock_timestamp() + make_interval(secs =>"
                         f" ${len(args) + 1}), holder = NULL WHERE bucket = ${len(args) + 2} AND slot = ${len(args) + 3}"
                         f" AND holder = ${len(args) + 4})")
            args += [float(token_hold_s), token.bucket, token.key, token.holder]
        if turn is not None:
            parts.append(f"trn AS (UPDATE rate_turns SET busy_until = clock_timestamp() + make_interval(secs =>"
                         f" ${len(args) + 1}), holder = NULL WHERE bucket = ${len(args) + 2} AND key = ${len(args) + 3}"
                         f" AND holder = ${len(args) + 4})")
            args += [float(turn_hold_s), turn.bucket, turn.key, turn.holder]
        if not parts:
            return
        try:
            await self._run("WITH " + ", ".join(parts) + " SELECT 1", *args)
        except Exception:  # noqa: BLE001
            log.warning("ratelimit.release_failed", exc_info=True)

    async def extend(self, helds: Sequence[Held]) -> None:
        """Push out the leases of what is still held (a slow request must not lose its token mid-flight)."""
        for held in helds:
            column = "slot" if held.table == TOKENS else "key"
            await self._run(f"UPDATE {held.table} SET busy_until = clock_timestamp() + make_interval(secs => $1)"
                            f" WHERE bucket = $2 AND {column} = $3 AND holder = $4",
                            float(self.lease_s), held.bucket, held.key, held.holder)

    @contextlib.asynccontextmanager
    async def kept_alive(self, helds: Sequence[Held]) -> AsyncIterator[None]:
        """Heartbeats (every lease/3) for the body's duration; nothing is sent for a body shorter than that."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease_s / 3)
                try:
                    await self.extend(helds)
                except Exception:  # noqa: BLE001 - a missed beat: the lease still has two thirds to run
                    log.warning("ratelimit.heartbeat_failed", exc_info=True)

        task = asyncio.create_task(beat(), name="ratelimit-heartbeat")
        try:
            yield
        finally:
            task.cancel()

    # ---- paces ----

    async def next_start(self, key: str, *, interval_s: float) -> float:
        """Reserve the next start for `key`, at least `interval_s` after the previous one; seconds to wait for it."""
        row = await self._row(_NEXT_START, key, float(interval_s))
        return max(0.0, float(row[0]))

    async def pace(self, key: str, *, interval_s: float) -> None:
        """Wait for this caller's start."""
        wait_s = await self.next_start(key, interval_s=interval_s)
        if wait_s > 0:
            await asyncio.sleep(wait_s)
