"""Alembic environment: migrations run on a connection handed over by `shared.migrate.migrate`."""

from __future__ import annotations

from alembic import context

from shared.models import all_metadata

target_metadata = all_metadata()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `shouhu migrate` (it opens the connection)")
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url="postgresql://", target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
