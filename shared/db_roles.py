"""The services' database role: what the running services connect as, made and granted at `shouhu migrate`.

Why: the services used to connect as DATABASE_URL's user, often the database
superuser, so anything that ran SQL through a service (a bug, an injection)
could switch off the audit log's triggers and rewrite it. Now:

- DATABASE_URL is the owner's URL (a superuser, or the role that owns the
  schema). Migrations run as it, and so does `shouhu migrate`'s last step,
  `ensure_service_role`, which creates the role `shouhu_service` when it is
  missing (LOGIN, no superuser, no CREATEDB, no CREATEROLE) and grants it, on
  every table of the schema, SELECT/INSERT/UPDATE/DELETE, except: the audit
  log and its head, read only (entries reach them through the staging table
  and the owner's SECURITY DEFINER seal, migration 0015); the staging table,
  insert only; alembic_version, read only. It runs after every migration, so
  tables added later are granted too.
- The services connect as that role: `service_url` is DATABASE_URL with the
  user replaced and SHOUHU_SERVICE_DB_PASSWORD as the password (none when
  unset: the embedded server and local test servers trust local connections).

Roles belong to the server, not to one database: every database on it (the
tests' per-test clones of their template included) shares the one role, and
the grants, which live in each database, are cloned with the template.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from urllib.parse import quote, urlsplit, urlunsplit

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

log = structlog.get_logger(__name__)

SERVICE_ROLE = "shouhu_service"
# Written to only through the sealing trigger; read by the services.
READ_ONLY_TABLES = ("audit_log", "audit_chain_head", "alembic_version")
INSERT_ONLY_TABLES = ("audit_staging",)


def service_url(owner_url: str, password: str | None) -> str:
    """The owner's URL (same server, database and options) as the services' role."""
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = SERVICE_ROLE + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq computes it).

    Sent instead of the password, so the password itself never appears in a
    statement (nor in a server log that records statements). For ASCII
    passwords (what `shouhu up` makes) SASLprep changes nothing.
    """
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def ensure_service_role(conn: AsyncConnection, *, password: str | None) -> None:
    """Create the services' role if missing, set its password when given, and (re)grant it; idempotent.

    Runs as the owner, in the caller's transaction.
    """
    role = (await conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"),
                               {"r": SERVICE_ROLE})).first()
    verifier = f" PASSWORD {_literal(scram_verifier(password))}" if password else ""
    if role is None:
        try:
            async with conn.begin_nested():
                # exec_driver_sql: the verifier's ':' and '$' must not be read as bind parameters.
                await conn.exec_driver_sql(
                    f"CREATE ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION{verifier}")
        except DBAPIError as exc:
            if "already exists" not in str(exc):  # another database's migration made it a moment ago
                raise RuntimeError(
                    f"cannot create the services' database role {SERVICE_ROLE!r} ({exc.orig}). Connect "
                    f"`shouhu migrate` as a role with CREATEROLE, or have it made once: CREATE ROLE "
                    f"{SERVICE_ROLE} LOGIN PASSWORD '...' (and set SHOUHU_SERVICE_DB_PASSWORD)") from exc
        else:
            log.info("db.service_role_created", role=SERVICE_ROLE)
    elif role.rolsuper:
        raise RuntimeError(f"the services' database role {SERVICE_ROLE!r} is a superuser; make it NOSUPERUSER")
    elif verifier:
        try:
            async with conn.begin_nested():
                await conn.exec_driver_sql(f"ALTER ROLE {SERVICE_ROLE} WITH LOGIN{verifier}")
        except DBAPIError as exc:  # made by someone else: keep the password they gave it
            log.warning("db.service_role_password_not_set", role=SERVICE_ROLE, error=str(exc.orig)[:200])
    await conn.execute(text(
        f"""
        DO $$
        DECLARE
            schema_name text := current_schema();
        BEGIN
            BEGIN  -- PUBLIC may connect by default; this matters only where that was revoked
                EXECUTE format('GRANT CONNECT ON DATABASE %I TO {SERVICE_ROLE}', current_database());
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'cannot grant CONNECT on this database to {SERVICE_ROLE}: its owner must';
            END;
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO {SERVICE_ROLE}', schema_name);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {SERVICE_ROLE}',
                           schema_name);
            EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {SERVICE_ROLE}', schema_name);
        END $$;
        """))
    for table in READ_ONLY_TABLES:
        await conn.execute(text(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table}"
                                f" FROM {SERVICE_ROLE}"))
    for table in INSERT_ONLY_TABLES:
        await conn.execute(text(f"REVOKE SELECT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table}"
                                f" FROM {SERVICE_ROLE}"))
