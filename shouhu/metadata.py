"""Every table of every service in one MetaData: what the migrations' autogenerate compares against.

Each service declares its own models on the shared declarative base; only the
composition root imports them all (shared/ must not know the services).
"""

from __future__ import annotations

from sqlalchemy import MetaData

from shared.models import Base


def all_metadata() -> MetaData:
    """Import every model module so the metadata is complete (alembic autogenerate, schema checks)."""
    import services.bot.alerts.models  # noqa: F401
    import services.bot.campaigns.models  # noqa: F401
    import services.bot.chats.models  # noqa: F401
    import services.bot.dialogues.models  # noqa: F401
    import services.callcenter.calls.models  # noqa: F401
    import services.callcenter.seats.models  # noqa: F401
    import services.dispatcher.campaigns.models  # noqa: F401
    import services.dispatcher.cases.models  # noqa: F401
    import services.dispatcher.clues.models  # noqa: F401
    import services.dispatcher.emergencies.models  # noqa: F401
    import services.dispatcher.policy.models  # noqa: F401
    import services.dispatcher.tasks.models  # noqa: F401
    import services.dispatcher.visits.models  # noqa: F401
    import services.dispatcher.warnings.models  # noqa: F401
    import shared.audit.models  # noqa: F401
    import shared.auth.models  # noqa: F401
    import shared.channels.models  # noqa: F401
    import shared.queue.models  # noqa: F401
    import shared.ratelimit.models  # noqa: F401

    return Base.metadata
