"""What the bot answers: commands, contact sharing, the /report dialogue and alert button presses.

Handlers are thin: they open a transaction, call chats/alerts service
functions, and reply. aiogram injects `sessionmaker` and `clock` (set on the
Dispatcher at start) by parameter name.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

import structlog
from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.bot.alerts.delivery import alert_result
from services.bot.alerts.service import parse_callback, recorded_text
from services.bot.chats import service as chats
from services.bot.texts import t
from shared import contracts
from shared.audit import service as audit
from shared.clock import Clock
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.phone import InvalidPhone, mask_phone, normalize_phone
from shared.queue.service import enqueue
from shared.sql import sql

log = structlog.get_logger(__name__)
SKIP_WORDS = {"跳过", "skip", "无", "no", "-"}


class Report(StatesGroup):
    kind = State()
    value = State()
    description = State()


async def _lang(sessionmaker: async_sessionmaker[AsyncSession], message: Message) -> str:
    async with transaction(sessionmaker) as session:
        return await chats.seen(session, chat_id=message.chat.id,
                                user_id=message.from_user.id if message.from_user else None)


async def start(message: Message, command: CommandObject, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Welcome, say who we are and how to verify us, and offer the share-contact button.

    The deep-link payload (/start <payload>, from a link in an SMS or read out
    in a call) only says where the citizen came from; it never binds anything.
    """
    lang = await _lang(sessionmaker, message)
    if command.args:
        log.info("bot.start", deep_link=command.args[:64], chat_id=message.chat.id)
    keyboard = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t("share_contact_button", lang), request_contact=True)]],
        resize_keyboard=True, one_time_keyboard=True)
    await message.answer(t("start", lang), reply_markup=keyboard)


async def contact(message: Message, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    """Bind the chat to a phone number, but only the sender's own (a forwarded card is refused)."""
    lang = await _lang(sessionmaker, message)
    card = message.contact
    if card is None or message.from_user is None or card.user_id != message.from_user.id:
        log.info("bot.bind", result="foreign_contact", chat_id=message.chat.id)
        await message.answer(t("foreign_contact", lang))
        return
    try:
        phone = normalize_phone(card.phone_number)
    except InvalidPhone:
        await message.answer(t("invalid_phone", lang))
        return
    async with transaction(sessionmaker) as session:
        await chats.bind(session, chat_id=message.chat.id, user_id=message.from_user.id, phone=phone, lang=lang,
                         now=clock.now())
    log.info("bot.bind", result="bound", chat_id=message.chat.id, phone=phone)
    await message.answer(t("bound", lang, phone=mask_phone(phone)), reply_markup=ReplyKeyboardRemove())


async def stop(message: Message, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock,
               state: FSMContext) -> None:
    lang = await _lang(sessionmaker, message)
    await state.clear()
    async with transaction(sessionmaker) as session:
        await chats.unbind(session, chat_id=message.chat.id, now=clock.now(), why="/stop")
    await message.answer(t("stopped", lang), reply_markup=ReplyKeyboardRemove())


async def help_(message: Message, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await message.answer(t("help", await _lang(sessionmaker, message)))


async def switch_lang(message: Message, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Chinese <-> English (or /lang en, /lang zh)."""
    current = await _lang(sessionmaker, message)
    wanted = (message.text or "").split(maxsplit=1)[1:] or [""]
    new = wanted[0].strip().lower() if wanted[0].strip().lower() in ("zh", "en") else \
        ("en" if current == "zh" else "zh")
    async with transaction(sessionmaker) as session:
        await chats.set_lang(session, chat_id=message.chat.id, lang=new)
    await message.answer(t("lang_switched", new))


# ---- /report: a short guided dialogue that files a clue ---------------------------------------------

async def report_start(message: Message, sessionmaker: async_sessionmaker[AsyncSession], state: FSMContext) -> None:
    lang = await _lang(sessionmaker, message)
    keyboard = InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=t(f"report_kinds.{k}", lang), callback_data=f"rk:{k}")]
        for k in ("phone", "url", "account", "other")
    ])
    await state.set_state(Report.kind)
    await state.update_data(lang=lang)
    await message.answer(t("report_kind", lang), reply_markup=keyboard)


async def report_cancel(message: Message, state: FSMContext) -> None:
    lang = (await state.get_data()).get("lang", "zh")
    await state.clear()
    await message.answer(t("report_cancelled", lang))


async def report_kind(query: CallbackQuery, state: FSMContext) -> None:
    kind = (query.data or "rk:other").split(":", 1)[1]
    lang = (await state.get_data()).get("lang", "zh")
    await state.update_data(kind=kind if kind in ("phone", "url", "account", "other") else "other")
    await state.set_state(Report.value)
    await query.answer()
    if query.message is not None:
        await query.message.answer(t("report_value", lang))


async def report_value(message: Message, state: FSMContext) -> None:
    lang = (await state.get_data()).get("lang", "zh")
    await state.update_data(value=(message.text or "")[:500])
    await state.set_state(Report.description)
    await message.answer(t("report_description", lang))


async def report_done(message: Message, state: FSMContext, sessionmaker: async_sessionmaker[AsyncSession],
                      clock: Clock) -> None:
    data = await state.get_data()
    lang = data.get("lang", "zh")
    text = (message.text or "").strip()
    now = clock.now()
    ref = clue_ref(now)
    async with transaction(sessionmaker) as session:
        phone = await chats.bound_phone(session, chat_id=message.chat.id)
        # The dispatcher stores the clue and routes it; the reference is ours, so the citizen gets it now.
        clue = contracts.ClueReport(ref=ref, kind=data.get("kind", "other"), value=data.get("value", ""),
                                    description=None if text.lower() in SKIP_WORDS else text[:2000],
                                    channel="telegram", chat_id=message.chat.id, phone=phone, reported_at=now)
        await enqueue(session, [clue.job(run_at=now, dedupe_key=f"clue:{ref}")], now=now)
    await state.clear()
    log.info("bot.report", ref=ref, chat_id=message.chat.id)
    await message.answer(t("report_done", lang, ref=ref))


def clue_ref(now: datetime) -> str:
    """A reference a citizen can read out on the phone: date plus six unambiguous characters."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return f"XS{now:%Y%m%d}-" + "".join(secrets.choice(alphabet) for _ in range(6))


# ---- alert buttons -------------------------------------------------------------------------------------

async def pressed(query: CallbackQuery, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock) -> None:
    """A citizen's answer to an alert: recorded once, sent to the dispatcher, shown on the message."""
    press = parse_callback(query.data)
    chat_id = query.message.chat.id if query.message else query.from_user.id
    now = clock.now()
    async with transaction(sessionmaker) as session:
        lang = await chats.seen(session, chat_id=chat_id, user_id=query.from_user.id)
        delivery = None
        if press is not None:
            delivery = (await session.execute(
                sql("SELECT id, attempt, feedback, lang, fraud_type FROM bot_deliveries"
                    " WHERE task_id = :t AND chat_id = :c AND status = 'sent'"
                    " ORDER BY attempt DESC LIMIT 1 FOR UPDATE"),
                {"t": press.task_id, "c": chat_id})).first()
        if press is None or delivery is None:
            await _audit_refused_press(session, press.task_id if press else None, chat_id, query.data, now)
            answer, feedback = t("press_refused", lang), None
        elif delivery.feedback is not None:
            answer, feedback = t("press_already", lang), None
        else:
            feedback = press.feedback
            await session.execute(sql("UPDATE bot_deliveries SET feedback = :f, feedback_at = :now WHERE id = :id"),
                                  {"f": feedback, "now": now, "id": delivery.id})
            await enqueue(session, [alert_result(task_id=press.task_id, attempt=delivery.attempt, result="pressed",
                                                 feedback=feedback, actor=f"citizen:telegram:{chat_id}")
                                    .to_job(now=now)], now=now)
            task = await dispatcher_contract.task_brief(session, press.task_id)
            closed = task is not None and task.closed
            answer = t("press_closed", lang) if closed and feedback != "loss_reported" else t("press_recorded", lang)
    log.info("bot.press", chat_id=chat_id, feedback=feedback, accepted=feedback is not None)
    if feedback is not None and query.message is not None and delivery is not None:
        try:
            await query.message.edit_text(recorded_text(delivery.fraud_type, delivery.lang or lang, feedback),
                                          reply_markup=None)
        except TelegramBadRequest as exc:  # "message is not modified" and the like: the answer below still goes
            log.info("bot.press.edit_skipped", error=str(exc)[:120])
    await query.answer(answer)


async def _audit_refused_press(session: AsyncSession, task_id: uuid.UUID | None, chat_id: int, data: str | None,
                               now: datetime) -> None:
    task = await dispatcher_contract.task_brief(session, task_id) if task_id is not None else None
    audit.record(session, at=now, actor=f"citizen:telegram:{chat_id}", action="bot.press_refused",
                 task_id=task_id if task else None, case_id=task.case_id if task else None,
                 region_code=task.region_code if task else None, callback_data=(data or "")[:64],
                 why="a button for an alert that was not sent to this chat")


def make_router() -> Router:
    """A fresh router with every handler (aiogram attaches a router to one Dispatcher only).

    Order matters: commands first, then the /report dialogue states, then contact and buttons.
    """
    router = Router(name="shouhu")
    router.message.register(start, CommandStart())
    router.message.register(contact, F.contact)
    router.message.register(stop, Command("stop"))
    router.message.register(help_, Command("help"))
    router.message.register(switch_lang, Command("lang"))
    router.message.register(report_start, Command("report"))
    router.message.register(report_cancel, Command("cancel"), StateFilter(Report))
    router.callback_query.register(report_kind, StateFilter(Report.kind), F.data.startswith("rk:"))
    router.message.register(report_value, StateFilter(Report.value), F.text)
    router.message.register(report_done, StateFilter(Report.description), F.text)
    router.callback_query.register(pressed, F.data.startswith("fb:"))
    return router
