"""Schema migrations (alembic), runnable from the CLI, from `shouhu up` and from tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import make_engine

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


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`, holding an advisory lock so concurrent starts are safe."""
    engine = make_engine(url, pool_size=1, application_name="shouhu-migrate")
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
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                await conn.commit()
    finally:
        await engine.dispose()
