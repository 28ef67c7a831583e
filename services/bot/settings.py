"""The bot service's settings."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class BotSettings(CommonSettings):
    host: str = Field(default="127.0.0.1", alias="SHOUHU_BOT_HOST")
    port: int = Field(default=8001, alias="SHOUHU_BOT_PORT")
    telegram_bot_token: str | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    telegram_api_base: str = Field(default="https://api.telegram.org", alias="TELEGRAM_API_BASE")
    telegram_webhook_url: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
