"""The bot's contract: the jobs it consumes, and what it lets the other services read.

The bot owns chats, chat bindings, alert deliveries and campaign deliveries.
Other services never touch those tables; they send the jobs below and read
through the functions at the end of this file (the bot keeps their SQL right).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.base import JobPayload
from shared.contracts.contact import ContactRequest, ContactStop
from shared.contracts.vocab import BOT_QUEUE
from shared.sql import dumps, sql

# ---- jobs the bot consumes -------------------------------------------------------------------------------


class SendAlert(ContactRequest):
    """A Telegram anti-fraud alert to every chat bound to the task's phone, with the four answer buttons."""

    KIND: ClassVar[str] = "bot.alert"
    QUEUE: ClassVar[str] = BOT_QUEUE


class StopAlerts(ContactStop):
    """The task's alerts already on the citizen's screen show that it was handled, without buttons.

    No further alert goes out for the task (the dispatcher has cancelled the queued ones).
    """

    KIND: ClassVar[str] = "bot.stop_alerts"
    QUEUE: ClassVar[str] = BOT_QUEUE


class SendNotice(JobPayload):
    """A one-off message to one chat, such as the answer to a clue the citizen reported (限时反馈)."""

    KIND: ClassVar[str] = "bot.notice"
    QUEUE: ClassVar[str] = BOT_QUEUE

    template: Literal["clue_answered"]
    chat_id: int
    ref: str = ""
    answer: str = ""


class CampaignRecipient(BaseModel):
    chat_id: int
    lang: str


class CampaignChunk(JobPayload):
    """One chunk of a publicity campaign's recipients, with the text in each language."""

    KIND: ClassVar[str] = "campaign.send"
    QUEUE: ClassVar[str] = BOT_QUEUE

    campaign_id: uuid.UUID
    texts: dict[str, str] = Field(description="the exact message per language (zh, en)")
    recipients: list[CampaignRecipient] = Field(min_length=1)


# ---- what the bot lets others read -----------------------------------------------------------------------

# The chats the bot can reach, one row per chat: (chat_id, phone, lang). A relation to embed in a query
# (the campaign segment joins it to the dispatcher's own tables in one statement); the bot keeps it right.
REACHABLE_CHATS = (
    "(SELECT b.chat_id, b.phone, COALESCE(c.lang, b.lang) AS lang FROM chat_bindings b"
    " LEFT JOIN bot_chats c ON c.chat_id = b.chat_id WHERE b.active)"
)

# How far each campaign's delivery has got: (campaign_id, sent, failed, blocked, uncertain).
CAMPAIGN_DELIVERY_COUNTS = "(SELECT campaign_id, sent, failed, blocked, uncertain FROM campaign_delivery_counts)"


async def bound_phones(session: AsyncSession, phones: list[str]) -> set[str]:
    """Which of these phone numbers (E.164) have an active Telegram chat bound to them."""
    if not phones:
        return set()
    rows = await session.execute(
        # JSON rather than text[]: at ingest this is a whole batch's phones, which asyncpg encodes one by one.
        sql("SELECT DISTINCT phone FROM chat_bindings WHERE active"
            " AND phone = ANY(ARRAY(SELECT json_array_elements_text(CAST(:p AS json))))"),
        {"p": dumps(phones).decode()})
    return {r[0] for r in rows}


async def preferred_lang(session: AsyncSession, phone: str) -> str | None:
    """The language the citizen chose in the bot (zh, en), or None when they never talked to it."""
    return (await session.execute(
        sql("SELECT COALESCE(c.lang, b.lang) FROM chat_bindings b LEFT JOIN bot_chats c ON c.chat_id = b.chat_id"
            " WHERE b.phone = :p AND b.active ORDER BY b.bound_at DESC LIMIT 1"), {"p": phone})).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    created_at: datetime
    sent_at: datetime | None
    attempt: int
    status: str
    error: str | None
    feedback: str | None
    feedback_at: datetime | None


async def alert_deliveries(session: AsyncSession, task_id: uuid.UUID) -> list[AlertDelivery]:
    """Every alert sent for a task (one per chat and attempt) and the button pressed on it, oldest first."""
    rows = (await session.execute(
        sql("SELECT created_at, sent_at, attempt, status, error, feedback, feedback_at FROM bot_deliveries"
            " WHERE task_id = :t ORDER BY created_at, id"), {"t": task_id})).all()
    return [AlertDelivery(**r._mapping) for r in rows]


@dataclass(frozen=True, slots=True)
class CampaignErrors:
    status: str
    error: str | None
    count: int


async def campaign_errors(session: AsyncSession, campaign_id: uuid.UUID, *, limit: int = 5) -> list[CampaignErrors]:
    """The commonest reasons a campaign's messages failed, were blocked or are uncertain."""
    rows = (await session.execute(
        sql("SELECT status, error, count(*) AS n FROM campaign_recipients"
            " WHERE campaign_id = :id AND status IN ('failed', 'blocked', 'uncertain')"
            " GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT :limit"), {"id": campaign_id, "limit": limit})).all()
    return [CampaignErrors(r.status, r.error, r.n) for r in rows]
