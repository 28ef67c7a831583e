"""The Telegram webhook's edge: the secret header, the update's shape, and what the OpenAPI says of both."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiogram import Bot
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from services.bot.settings import BotSettings
from shared.web import FieldErrors, pydantic_errors

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_SECRET_SCHEME = "telegramSecret"
SECURITY_SCHEMES = {TELEGRAM_SECRET_SCHEME: {
    "type": "apiKey", "in": "header", "name": SECRET_HEADER,
    "description": "the secret_token this bot gave Telegram with setWebhook (TELEGRAM_WEBHOOK_SECRET)"}}


class TelegramUpdateIn(BaseModel):
    """A Telegram Update (https://core.telegram.org/bots/api#update): `update_id` and at most one event field
    (`message`, `callback_query`, ...), each checked as the Bot API defines it."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"examples": [
        {"update_id": 10001, "message": {"message_id": 1, "date": 1795000000, "text": "/start",
                                         "chat": {"id": 42, "type": "private"}}}]})

    update_id: StrictInt = Field(description="Telegram's sequence number of the update")


class WebhookAnswer(BaseModel):
    ok: bool
    handled: bool = Field(description="false: an update of a kind this bot does not handle (ignored), or one whose "
                                      "handling failed (logged; as in long polling, Telegram does not send it again)")


WEBHOOK_BODY: dict[str, Any] = {"required": True, "content": {"application/json": {
    "schema": TelegramUpdateIn.model_json_schema(ref_template="#/components/schemas/{model}")}}}


def secret_matches(request: Request, settings: BotSettings) -> bool:
    """True when webhook mode is on and the request carries this bot's secret (compared in constant time).

    Header values arrive as latin-1 text: they are compared as the bytes that were sent, so a non-ASCII
    header is simply a wrong secret (hmac.compare_digest refuses non-ASCII str).
    """
    secret = settings.telegram_webhook_secret
    if not settings.telegram_webhook_url or not secret:
        return False
    presented = request.headers.get(SECRET_HEADER, "").encode("latin-1")
    return hmac.compare_digest(presented, secret.encode())


def parse_update(body: bytes, bot: Bot) -> Update | None:
    """The update in `body`, or None for a kind of update this bot does not know; FieldErrors when malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FieldErrors.one("body", f"not valid JSON ({exc})") from None
    try:
        TelegramUpdateIn.model_validate(data)
        update = Update.model_validate(data, context={"bot": bot})
    except ValidationError as exc:
        raise FieldErrors(pydantic_errors(exc.errors())) from None
    try:
        update.event_type  # noqa: B018 - raises for an update carrying no event this aiogram knows
    except UpdateTypeLookupError:
        return None
    return update
