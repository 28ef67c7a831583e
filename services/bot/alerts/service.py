"""Alert messages: the text for a fraud type, its four answer buttons, and what a press means."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from services.bot.texts import alerts, lang_of

# Button codes in callback_data ("fb:<code>:<task uuid>", 41 bytes, under Telegram's 64).
FEEDBACK_BY_CODE = {"a": "acknowledged", "l": "loss_reported", "c": "callback_requested", "n": "not_me"}
CODE_BY_FEEDBACK = {v: k for k, v in FEEDBACK_BY_CODE.items()}
CALLBACK_PREFIX = "fb"


@dataclass(frozen=True)
class Press:
    feedback: str
    task_id: uuid.UUID


def callback_data(feedback: str, task_id: uuid.UUID) -> str:
    return f"{CALLBACK_PREFIX}:{CODE_BY_FEEDBACK[feedback]}:{task_id}"


def parse_callback(data: str | None) -> Press | None:
    """The press a button's callback_data stands for, or None for anything malformed."""
    try:
        prefix, code, task = (data or "").split(":", 2)
        if prefix != CALLBACK_PREFIX:
            return None
        return Press(FEEDBACK_BY_CODE[code], uuid.UUID(task))
    except (ValueError, KeyError):
        return None


def alert_text(fraud_type: str, lang: str | None) -> str:
    texts = alerts()
    body = texts.text(f"alerts.{fraud_type}", lang, fallback="alerts.other")
    return f"{texts.text('header', lang)}{body}\n\n{texts.text('footer', lang)}"


def alert_keyboard(task_id: uuid.UUID, lang: str | None) -> InlineKeyboardMarkup:
    lang = lang_of(lang)
    rows = [[InlineKeyboardButton(text=alerts().text(f"buttons.{f}", lang), callback_data=callback_data(f, task_id))]
            for f in ("acknowledged", "loss_reported", "callback_requested", "not_me")]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def recorded_text(fraud_type: str, lang: str | None, feedback: str) -> str:
    """The alert as edited after a press: the warning stays, the recorded answer is added."""
    return f"{alert_text(fraud_type, lang)}\n\n{alerts().text(f'recorded.{feedback}', lang)}"


def handled_text(fraud_type: str, lang: str | None, *, reason: str, outcome: str | None) -> str:
    """An alert once the task was handled another way: the warning stays, what happened is added, no buttons."""
    if reason == "closed":
        key = "handled.acknowledged" if outcome == "acknowledged" else "handled.closed"
    else:  # not_me, callback_requested, loss_reported: the same words as the button's own answer
        key = f"recorded.{reason}"
    return f"{alert_text(fraud_type, lang)}\n\n{alerts().text(key, lang)}"
