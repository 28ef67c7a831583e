"""Alembic environment: migrations run on a connection handed over by `shared.migrate.migrate`."""

from __future__ import annotations

from alembic import context

# The full metadata is handed over by the composition root (`shouhu.metadata.all_metadata`) when a
# developer autogenerates a revision; upgrades run the hand-checked scripts and need none.
target_metadata = context.config.attributes.get("target_metadata")


# Tables made by hand-written migrations, with no model (autogenerate must leave them alone).
_UNMODELLED = {"audit_staging", "console_sessions"}


def _include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    return not (type_ == "table" and name in _UNMODELLED)


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `shouhu migrate` (it opens the connection)")
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      include_object=_include_object)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url="postgresql://", target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
