"""Database engine, sessions and URL handling (SQLAlchemy 2 async over asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.audit.keys import CONNECTION_SETTING as AUDIT_KEY_SETTING
from shared.audit.keys import connection_value as audit_connection_value
from shared.db_roles import service_url

log = structlog.get_logger(__name__)


def asyncpg_url(url: str) -> str:
    """Accept `postgresql://`, `postgres://` or `postgresql+asyncpg://` and return the asyncpg form."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        scheme = "postgresql+asyncpg"
    if scheme != "postgresql+asyncpg":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {parts.scheme!r}")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def plain_url(url: str) -> str:
    """The libpq/asyncpg form (`postgresql://...`) of a URL, for raw asyncpg connections."""
    parts = urlsplit(asyncpg_url(url))
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


async def raw_connect(url: str, **kwargs: object):  # noqa: ANN201
    """A plain asyncpg connection (LISTEN, admin statements, benchmarks), Unix-socket URLs included."""
    import asyncpg

    parts = urlsplit(plain_url(url))
    query = dict(parse_qsl(parts.query))
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if "host" in query:
        kwargs.setdefault("host", query["host"])
    return await asyncpg.connect(dsn, **kwargs)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def resolve_database_url(configured: str | None, data_dir: Path) -> str:
    """The configured URL, or the embedded server's (started on demand) when none is set."""
    if configured:
        return asyncpg_url(configured)
    from shared.embedded import start_embedded_postgres

    return asyncpg_url(start_embedded_postgres(data_dir / "pgdata"))


# SQLSTATEs that say the server cannot serve us now, not that the statement is wrong: class 08 (connection
# exception), admin/crash shutdown and "the database system is starting up" (57P01-57P03), too many connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# asyncpg's InterfaceError also covers bad query arguments (DataError): only these messages mean a lost connection.
_LOST_CONNECTION = ("connection is closed", "connection was closed", "another operation is in progress",
                    "pool is closing", "connection has been released")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached or is restarting (retry shortly), not a bad statement.

    Reads the whole chain: SQLAlchemy wraps asyncpg's error (`.orig`, whose `__cause__` is asyncpg's own), and a
    refused connection surfaces as a bare OSError from inside the pool.
    """
    import asyncpg

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) > 12:
            continue
        seen.add(id(e))
        if isinstance(e, PoolTimeoutError | asyncio.TimeoutError | OSError | DatabaseUnavailable):
            return True  # no connection free in time, a connect timeout, refused/reset connections
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, asyncpg.PostgresConnectionError | asyncpg.exceptions.ConnectionDoesNotExistError):
            return True
        if isinstance(e, asyncpg.InterfaceError) and any(m in str(e) for m in _LOST_CONNECTION):
            return True
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES):
            return True
        # Explicit chaining only (SQLAlchemy's `.orig`, `raise ... from`): an unrelated error raised while some
        # network error was being handled is not an outage.
        todo.extend((getattr(e, "orig", None), e.__cause__))
    return False


class DatabaseUnavailable(Exception):
    """Raise (from the original error) where a route catches errors broadly: shared/web.py answers 503."""


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "shouhu",
                audit_key: str | None = None, connect_timeout_s: float = 5.0,
                connect_wait_s: float = 4.0) -> AsyncEngine:
    """An engine whose connections carry the audit key (`audit_key`) when given.

    A transaction that records audit entries commits only on a connection with
    the key: the database seals entries with it (shared/audit/keys.py). It is
    sent as a start-up setting, so no statement ever contains it.
    """
    parts = urlsplit(asyncpg_url(url))
    query = dict(parse_qsl(parts.query))
    # Unix-socket URLs (`?host=/path`) are passed to asyncpg as connect args.
    host = query.pop("host", None)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
    server_settings = {"application_name": application_name}
    if audit_key:
        server_settings[AUDIT_KEY_SETTING] = audit_connection_value(audit_key)
    connect_args: dict[str, object] = {"server_settings": server_settings, "timeout": connect_timeout_s}
    if host:
        connect_args["host"] = host
    return create_async_engine(
        url,
        # New connections ride out a database restart (refused, "starting up") for up to `connect_wait_s`,
        # then the request answers 503 with Retry-After (shared/web.py).
        async_creator=_patient_connect(url, connect_args, wait_s=connect_wait_s),
        pool_size=pool_size,
        max_overflow=pool_size,
        # Ping each pooled connection as it is handed out: after a database restart every pooled connection is
        # dead, and without the ping each would fail one request (or confuse asyncpg: "another operation is in
        # progress"). A failed ping reconnects at once; a disconnect seen anywhere invalidates the whole pool.
        pool_pre_ping=True,
        # Wait at most 10 s for a free connection, then answer 503 (shared/web.py) rather than hang.
        pool_timeout=10,
        connect_args=connect_args,
    )


def _patient_connect(url: str, connect_args: dict[str, object], *, wait_s: float):  # noqa: ANN202
    """An asyncpg connect that retries what a restarting database answers, for up to `wait_s`.

    A `pg_ctl restart` or a failover refuses connections (or says "the database system is starting up")
    for a second or two. A request that needs a new connection then waits that out rather than answering
    503 at once; `connect_timeout_s` still bounds each attempt (a host that does not answer at all).
    """
    import asyncpg

    retryable = (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
                 asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError)

    async def connect():  # noqa: ANN202
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_s
        pause_s = 0.05
        while True:
            try:
                return await raw_connect(url, **connect_args)
            except retryable:
                if loop.time() + pause_s >= give_up_at:
                    raise
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, 0.5)

    return connect


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after the caller commits (routes answer from them).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error. Services never commit; callers do."""
    async with sessionmaker() as session:
        async with session.begin():
            yield session


async def wait_for_database(url: str, *, timeout_s: float = 60.0) -> None:
    """Prestart: wait until the database answers (it may still be starting in compose or on a laptop)."""
    engine = make_engine(url, pool_size=1, application_name="shouhu-prestart")
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout_s),
            wait=wait_exponential(multiplier=0.2, max=3),
            # Connection refused, DNS not ready, "the database system is starting up": all worth waiting for.
            retry=retry_if_exception_type(Exception),
            reraise=True,
        ):
            with attempt:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                if attempt.retry_state.attempt_number > 1:
                    log.info("database.reachable", attempts=attempt.retry_state.attempt_number)
    finally:
        await engine.dispose()


async def open_database(settings, *, application_name: str):  # noqa: ANN001, ANN201
    """Prestart for a service: resolve the URL (embedded when unset), wait for it, make the engine and sessions.

    The service connects as the services' role (shared/db_roles.py), not as
    DATABASE_URL's owner, and with the audit key. Returns (url, engine,
    sessionmaker), url being the services' own; the caller disposes of the engine.
    """
    url = service_url(resolve_database_url(settings.database_url, settings.data_dir), settings.service_password())
    await wait_for_database(url, timeout_s=settings.db_wait_s)  # compose starts the database alongside us
    engine = make_engine(url, pool_size=settings.db_pool_size, application_name=application_name,
                         audit_key=settings.audit_secret())
    return url, engine, make_sessionmaker(engine)
