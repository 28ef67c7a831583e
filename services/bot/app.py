"""The bot service (Telegram alerts and acknowledgements).

Issue #3 builds the aiogram bot and the Telegram sandbox; until then the
service runs with health, readiness and metrics only, and the dispatcher's
"bot.alert" jobs wait in the queue for it.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.bot.settings import BotSettings
from shared.service_app import create_service_app


def create_app(settings: BotSettings | None = None) -> FastAPI:
    return create_service_app("bot", settings or BotSettings(), title="Shouhu bot",
                              description="Telegram anti-fraud alerts (not yet delivering: see issue #3).")
