"""The desk phone's Twilio webhooks (/twilio/desk...): the seat line's voice URL and each keypad step.

Signature-checked as every /twilio route is (403 otherwise). The first request names the seat by the caller's
number; every later step's URL carries the seat's key (and the task), which Twilio's signature over the URL
vouches for, and the seat's key is looked up again each time (a key revoked mid-call stops the next step).
Routes are thin: seats/desk.py does the work, seats/desk_twiml.py says it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Literal
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.callcenter.calls.views import RowId, SeatKey, SignedForm
from services.callcenter.seats import desk
from services.callcenter.seats import desk_twiml as say
from services.callcenter.seats.service import SeatRefused
from shared.auth.service import Principal
from shared.db import transaction
from shared.phone import InvalidPhone, mask_phone, normalize_phone

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/twilio/desk", include_in_schema=False)
Lang = Annotated[Literal["zh", "en"], Query()]


def _xml(body: str) -> Response:
    return Response(body, media_type="application/xml")


@dataclass(slots=True)
class Links:
    """The URLs of one desk call's next steps (each carries the seat, the language and, on a task, the task)."""

    base: str
    seat: str
    lang: str
    task: uuid.UUID | None = None

    @classmethod
    def of(cls, request: Request, seat: str, lang: str, task: uuid.UUID | None = None) -> Links:
        return cls(request.app.state.settings.public_url.rstrip("/") + "/twilio/desk", seat, lang, task)

    def url(self, step: str, **extra: object) -> str:
        query = {"seat": self.seat, "lang": self.lang, **({"task": str(self.task)} if self.task else {}), **extra}
        return f"{self.base}/{step}?{urlencode(query)}"

    def home(self) -> dict[str, str]:
        return {"menu_url": self.url("menu"), "task_url": self.url("task"), "home_url": self.url("home")}


async def _present(request: Request, session: AsyncSession, principal: Principal, links: Links,
                   before: list[str]) -> str:
    home = await desk.home(session, principal, now=request.app.state.clock.now(), scale=request.app.state.clock.scale)
    if home.task is not None:
        links = replace(links, task=home.task.task_id)
    return say.present(home, lang=links.lang, before=before, **links.home())


@router.post("")
async def incoming(request: Request, form: SignedForm) -> Response:
    """The seat line rings: the caller's number names the seat; a number that is no seat's is refused."""
    try:
        phone = normalize_phone(form.get("From", ""))
    except InvalidPhone:
        phone = None
    async with transaction(request.app.state.sessionmaker) as session:
        principal = await desk.seat_by_phone(session, phone) if phone else None
        if principal is None:
            log.info("desk.refused", caller=mask_phone(phone) if phone else "unknown")
            return _xml(say.refused())
        log.info("desk.signed_in", seat=principal.key_id, call_sid=form.get("CallSid"))
        links = Links.of(request, principal.key_id, "zh")
        return _xml(await _present(request, session, principal, links,
                                   [say.say("welcome", "zh", name=principal.name)]))


@router.post("/home")
async def again(request: Request, form: SignedForm, seat: SeatKey, lang: Lang = "zh") -> Response:
    """Silence at a menu or a task: say where the operator is again."""
    async with transaction(request.app.state.sessionmaker) as session:
        principal = await desk.seat_principal(session, seat)
        if principal is None:
            return _xml(say.refused())
        return _xml(await _present(request, session, principal, Links.of(request, seat, lang), []))


@router.post("/menu")
async def menu(request: Request, form: SignedForm, seat: SeatKey, lang: Lang = "zh") -> Response:
    """A key at the menu: 1 the next task, 2 pause, 0 sign off, * the other language."""
    digit = form.get("Digits", "")[:1]
    state, now = request.app.state, request.app.state.clock.now()
    links = Links.of(request, seat, lang)
    before: list[str] = []
    async with transaction(state.sessionmaker) as session:
        principal = await desk.seat_principal(session, seat)
        if principal is None:
            return _xml(say.refused())
        if digit == "1":
            task = await desk.next_task(session, principal, now=now, scale=state.clock.scale)
            log.info("desk.next", seat=seat, task_id=str(task.task_id) if task else None)
            if task is None:
                before.append(say.say("empty", lang))
            # A task claimed is read by _present: the seat holds it now.
        elif digit == "2":
            await desk.pause(session, principal, reason=say.say("pause_reason", "zh"), now=now)
            before.append(say.say("paused", lang))
        elif digit == "0":
            await desk.sign_off(session, principal, now=now)
            log.info("desk.signed_off", seat=seat)
            return _xml(say.goodbye("signed_off", lang))
        elif digit == "*":
            links.lang = lang = "en" if lang == "zh" else "zh"
        else:
            before.append(say.say("wrong_key", lang))
        return _xml(await _present(request, session, principal, links, before))


@router.post("/task")
async def task_keys(request: Request, form: SignedForm, seat: SeatKey, task: uuid.UUID,
                    lang: Lang = "zh") -> Response:
    """A key on a task: 1 call the citizen (bridged, 96110 caller ID), 9 hear it again."""
    digit = form.get("Digits", "")[:1]
    state, now = request.app.state, request.app.state.clock.now()
    links = Links.of(request, seat, lang, task)
    async with transaction(state.sessionmaker) as session:
        principal = await desk.seat_principal(session, seat)
        if principal is None:
            return _xml(say.refused())
        if digit == "1":
            try:
                plan = await desk.start_call(session, principal, task, from_number=state.settings.from_number(),
                                             now=now)
            except SeatRefused as exc:
                if exc.code == "already_calling":
                    return _xml(say.dispose_menu(lang=lang, action_url=links.url("dispose"),
                                                 again_url=links.url("after"), before=[say.say("already_called", lang)]))
                return _xml(await _present(request, session, principal, links, [say.say("not_claimed", lang)]))
            log.info("desk.call", seat=seat, task_id=str(task), attempt=plan.attempt_id)
            base = state.settings.public_url.rstrip("/")
            return _xml(say.dial(plan.citizen_phone, lang=lang, caller_id=state.settings.from_number(),
                                 action_url=links.url("bridged", attempt=plan.attempt_id),
                                 status_url=f"{base}/twilio/status?attempt={plan.attempt_id}"))
        before = [] if digit == "9" else [say.say("wrong_key", lang)]
        return _xml(await _present(request, session, principal, links, before))


@router.post("/bridged")
async def bridged(request: Request, form: SignedForm, seat: SeatKey, task: uuid.UUID, attempt: RowId,
                  lang: Lang = "zh") -> Response:
    """The bridge is over (the Dial's action): how it went, then the disposition keys."""
    async with transaction(request.app.state.sessionmaker) as session:
        answered = await desk.call_ended(session, attempt_id=attempt, form=form, now=request.app.state.clock.now())
    log.info("desk.call_ended", seat=seat, task_id=str(task), dial_status=form.get("DialCallStatus"))
    links = Links.of(request, seat, lang, task)
    ended = say.say("call_ended.answered" if answered else "call_ended.not_answered", lang)
    return _xml(say.dispose_menu(lang=lang, action_url=links.url("dispose"), again_url=links.url("after"),
                                 before=[ended]))


@router.post("/after")
async def after(request: Request, form: SignedForm, seat: SeatKey, task: uuid.UUID, lang: Lang = "zh") -> Response:
    """Silence after the call: the disposition keys again."""
    links = Links.of(request, seat, lang, task)
    return _xml(say.dispose_menu(lang=lang, action_url=links.url("dispose"), again_url=links.url("after")))


@router.post("/dispose")
async def dispose(request: Request, form: SignedForm, seat: SeatKey, task: uuid.UUID, lang: Lang = "zh") -> Response:
    """A disposition key (1-6; a callback asks for minutes first), or 9 to hear the task again."""
    digit = form.get("Digits", "")[:1]
    links = Links.of(request, seat, lang, task)
    menu = {"lang": lang, "action_url": links.url("dispose"), "again_url": links.url("after")}
    if digit == "9":
        async with request.app.state.sessionmaker() as session:
            try:
                readout = await desk.readout(session, task, now=request.app.state.clock.now())
            except SeatRefused:  # no such task (any more): the menu alone
                readout = None
        return _xml(say.dispose_menu(**menu, task=readout))
    if digit not in desk.DISPOSITION_KEYS:
        return _xml(say.dispose_menu(**menu, before=[say.say("wrong_key", lang)]))
    if desk.DISPOSITION_KEYS[digit] == "callback":
        return _xml(say.ask_callback(lang=lang, action_url=links.url("callback"), again_url=links.url("after")))
    return await _record(request, links, seat=seat, task=task, digit=digit, callback_in_min=None)


@router.post("/callback")
async def callback(request: Request, form: SignedForm, seat: SeatKey, task: uuid.UUID,
                   lang: Lang = "zh") -> Response:
    """The callback's minutes, keyed and ended by #."""
    links = Links.of(request, seat, lang, task)
    digits = form.get("Digits", "")
    minutes = int(digits) if digits.isdigit() else 0
    if not 0 < minutes <= desk.MAX_CALLBACK_MIN:
        return _xml(say.ask_callback(lang=lang, action_url=links.url("callback"), again_url=links.url("after"),
                                     before=[say.say("callback.bad", lang)]))
    digit = next(k for k, d in desk.DISPOSITION_KEYS.items() if d == "callback")
    return await _record(request, links, seat=seat, task=task, digit=digit, callback_in_min=minutes)


async def _record(request: Request, links: Links, *, seat: str, task: uuid.UUID, digit: str,
                  callback_in_min: int | None) -> Response:
    """Record the disposition as the API does (same claim, same audit), then the seat's menu (wrap-up)."""
    state, now, lang = request.app.state, request.app.state.clock.now(), links.lang
    menu = {"lang": lang, "action_url": links.url("dispose"), "again_url": links.url("after")}
    async with transaction(state.sessionmaker) as session:
        principal = await desk.seat_principal(session, seat)
        if principal is None:
            return _xml(say.refused())
        try:
            disposition = await desk.dispose(session, principal, task, digit=digit, callback_in_min=callback_in_min,
                                             now=now, wrap_up_s=state.clock.real_s(state.settings.seat_wrap_up_s))
        except SeatRefused as exc:
            if exc.code == "emergency_refused":
                return _xml(say.dispose_menu(**menu, before=[say.say("emergency_refused", lang)]))
            before = [say.say("not_claimed", lang)]
        else:
            log.info("desk.disposition", seat=seat, task_id=str(task), disposition=disposition)
            before = [say.say("recorded", lang, label=say.say(f"dispo.{disposition}", lang))]
            if callback_in_min:
                before.append(say.say("callback.at", lang, minutes=callback_in_min))
    # The seat's menu in a transaction of its own: a refused disposition above rolled back, this reads afresh.
    async with transaction(state.sessionmaker) as session:
        return _xml(await _present(request, session, principal, Links.of(request, seat, lang), before))
