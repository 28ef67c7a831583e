"""Schema migrations (alembic), runnable from the CLI, from `shouhu up` and from tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import make_engine
from shared.db_roles import ensure_service_role

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Several replicas may start at once: only one migrates, the others wait on this lock.
_MIGRATION_LOCK_ID = 0x5348_4F55  # "SHOU"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(session: AsyncSession) -> str | None:
    exists = (await session.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))).scalar()
    if not exists:
        return None
    return (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def migrate(url: str, revision: str = "head", *, audit_key: str, service_password: str | None = None) -> None:
    """Bring the database at `url` (the owner's) to `revision`, then make and grant the services' role.

    Holds an advisory lock so concurrent starts are safe. The connection
    carries the audit key: migration 0015 signs the chain head with it.
    """
    engine = make_engine(url, pool_size=1, application_name="shouhu-migrate", audit_key=audit_key)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.commit()
            try:
                def upgrade(sync_conn) -> None:  # noqa: ANN001
                    cfg = alembic_config()
                    cfg.attributes["connection"] = sync_conn
                    command.upgrade(cfg, revision)

                await conn.run_sync(upgrade)
                await conn.commit()
                await ensure_service_role(conn, password=service_password)
                await conn.commit()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                await conn.commit()
    finally:
        await engine.dispose()
