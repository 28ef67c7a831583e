"""The seat operator console: one page (GET /console) and four actions, each a plain form (POST, then 303).

Thin on purpose: every action is the seats service's own function (the JSON
API calls the same ones), so the claim lease, the do-not-call list, the
disposition sent to the dispatcher and its audit entry (actor = this key) are
the same whichever way an operator works. The page shows only tasks the seat
holds now; any other task id is ignored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from services.callcenter.seats import service as seats
from shared import contracts
from shared.clock import LOCAL_TZ
from shared.console.sessions import ConsoleUser
from shared.console.web import Console, LiveEmergency
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.i18n import Catalog
from shared.phone import mask_phone

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
SCRIPTS = Catalog(HERE / "scripts.yaml")


async def live_emergencies(request: Request, user: ConsoleUser) -> list[LiveEmergency]:
    """The banner: open emergencies in my unit (read through the dispatcher's contract), and where each stands
    for me: in my hands (a link to it), first in the queue (press N), or with another seat."""
    async with request.app.state.sessionmaker() as session:
        found = await dispatcher_contract.open_emergencies(session, user.principal.unit)
        where = await seats.who_holds(session, user.principal, [e.task_id for e in found])
    items = []
    for e in found:
        holder = where.get(e.task_id)
        if holder == "mine":
            items.append(LiveEmergency(e, href=f"/console?task={e.task_id}", hint_key="banner.open_claimed"))
        else:
            items.append(LiveEmergency(e, hint_key="banner.other_seat" if holder == "other" else "banner.in_queue"))
    return items


console = Console(
    service="callcenter", title_key="console.operator", roles=("operator",), home="/console",
    template_dirs=[HERE / "templates"], messages_files=[HERE / "messages.yaml"],
    now=lambda request: request.app.state.clock.now(),
    live_emergencies=live_emergencies,
)
Page = console.page_user()
Action = console.action_user()
router = APIRouter(prefix="/console", include_in_schema=False)

# The message after an action (?m=code): anything else in the query is ignored.
FLASHES = {
    **dict.fromkeys(("state_saved", "claimed", "empty", "calling", "recorded", "recorded_next", "recorded_empty",
                     "recorded_wrap_up"), "info"),
    **dict.fromkeys(("not_available", "not_claimed", "no_phone", "already_calling", "callback_time", "pause_reason",
                     "bad_phone", "bad_state", "bad_disposition", "call_failed", "emergency_refused",
                     "bad_loss", "wrap_up"), "error"),
}
Text = Annotated[str, Form(max_length=2000)]


def back(task_id: Any = None, message: str | None = None) -> RedirectResponse:
    query = urlencode({k: str(v) for k, v in (("task", task_id), ("m", message)) if v})
    return console.redirect("/console" + (f"?{query}" if query else ""))


def as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def local_input(value: str) -> datetime | None:
    """A datetime-local field (the centre's local time, no zone) as an aware datetime; None when empty or unreadable."""
    try:
        return datetime.fromisoformat(value.strip()).replace(tzinfo=LOCAL_TZ) if value.strip() else None
    except ValueError:
        return None


EMERGENCY_LINES = ("opening", "bank", "amount", "call_now", "stop_contact", "no_codes")


def call_script(fraud_type: str, phone: str, lang: str, *, emergency: bool = False) -> dict[str, Any]:
    """What the operator says: the persuasion script for the fraud type, or, once money has left, the emergency one."""
    if emergency:
        return {"emergency": True, "rule": SCRIPTS.text("emergency.rule", lang),
                "lines": [SCRIPTS.text(f"emergency.lines.{key}", lang, last4=phone[-4:]) for key in EMERGENCY_LINES]}
    lines = [SCRIPTS.text("opening", lang, last4=phone[-4:]), SCRIPTS.text("ask", lang),
             SCRIPTS.text(f"points.{fraud_type}", lang, fallback="points.other"),
             SCRIPTS.text("verify", lang), SCRIPTS.text("if_paid", lang)]
    return {"emergency": False, "rule": SCRIPTS.text("rule", lang), "lines": lines}


def timeline(found: dict[str, Any] | None, t: Any) -> list[dict[str, Any]]:
    """The citizen's cases, warnings and calls in my unit as one list, newest first."""
    if not found:
        return []
    events: list[dict[str, Any]] = []
    for c in found["cases"]:
        events.append({"at": c.created_at, "kind": "audit", "case": c.id,
                       "text": t("hist.case_opened", tier=t("tier." + c.tier))})
        if c.closed_at is not None:
            events.append({"at": c.closed_at, "kind": "audit", "case": c.id,
                           "text": t("hist.case_closed", outcome=t("outcome." + c.outcome) if c.outcome
                                     else t("status.closed"))})
    case_of_task = {c.task_id: c.id for c in found["cases"]}
    for w in found["warnings"]:
        events.append({"at": w.occurred_at, "kind": "warning", "case": w.case_id,
                       "text": f"{t('hist.warning')} · {t('signal.' + w.signal)} · {t('fraud.' + w.fraud_type)}"
                               f" · {w.source}"})
    for c in found["calls"]:
        detail = " · ".join(str(x) for x in (c.status, c.outcome, f"{c.duration_s}s" if c.duration_s else None) if x)
        events.append({"at": c.created_at, "kind": "call", "case": case_of_task.get(c.task_id),
                       "text": f"{t('channel.' + c.channel)} · {detail}"})
    return sorted(events, key=lambda e: e["at"], reverse=True)


@router.get("", response_class=HTMLResponse)
async def desk(request: Request, user: Page, task: str | None = None, m: str | None = None) -> HTMLResponse:
    """My state, the task in hand (card, script, history, call, disposition), my other claimed tasks."""
    principal, now, lang = user.principal, console.now(request), console.lang_of(request)
    t = console.translator(lang)
    card = None
    # A transaction: reading my tasks first hands me the task of a citizen just put through to my phone (key 2).
    async with transaction(request.app.state.sessionmaker) as session:
        await seats.end_wrap_ups(session, now=now, key_id=principal.key_id)
        seat = await seats.get_seat(session, principal)
        mine = await seats.my_tasks(session, principal, now=now, scale=request.app.state.clock.scale)
        wanted = as_uuid(task)
        # The task asked for, else a citizen on the line with me now, else the first I hold.
        on_line = next((r for r in mine if r.connected_at and not r.call_ended_at), None)
        held = next((r for r in mine if r.id == wanted), on_line or (mine[0] if mine else None))
        if held is not None:
            row, reasons = await seats.task_card(session, held.id)
            found = await seats.history(session, principal, phone=row.phone)
            calls_here = [c for c in (found or {}).get("calls", []) if c.task_id == row.id
                          and c.channel == "operator_call"]
            card = {"task": row, "reasons": reasons, "claim_until": held.lease_expires_at,
                    "minutes_left": int((row.due_at - now).total_seconds() // 60), "masked": mask_phone(row.phone),
                    "script": call_script(row.fraud_type, row.phone, lang, emergency=row.emergency), "events": timeline(found, t)[:30],
                    "cases": len(found["cases"]) if found else 0,
                    "warnings": len(found["warnings"]) if found else 0,
                    "calls": len(found["calls"]) if found else 0,
                    "last_call": calls_here[-1] if calls_here else None,
                    "connected_at": held.connected_at, "call_ended_at": held.call_ended_at}
    flashes = [(FLASHES[m], t("flash." + m))] if m in FLASHES else []
    return console.render(request, "desk.html", user, seat=seat, mine=mine, card=card, flashes=flashes,
                          dispositions=seats.DISPOSITIONS, states=seats.STATES_CHOSEN)


@router.get("/inbox")
async def inbox(request: Request, user: Page) -> Response:
    """Polled by an empty desk: reload the page once a task is in my hands (a citizen put through to my phone)."""
    async with transaction(request.app.state.sessionmaker) as session:
        mine = await seats.my_tasks(session, user.principal, now=console.now(request),
                                    scale=request.app.state.clock.scale)
    return Response(status_code=204, headers={"HX-Refresh": "true"} if mine else None)


@router.post("/seat")
async def set_seat(request: Request, user: Action, state: Text = "", reason: Text = "", phone: Text = "",
                   task: Text = "") -> RedirectResponse:
    """Set my state (available, paused with a reason, offline) and my seat phone."""
    try:
        async with transaction(request.app.state.sessionmaker) as session:
            await seats.change_state(session, user.principal, state=state, reason=reason.strip(),
                                     phone=phone.strip(), now=console.now(request))
    except seats.SeatRefused as exc:
        return back(as_uuid(task), exc.code)
    return back(as_uuid(task), "state_saved")


@router.post("/next")
async def take_next(request: Request, user: Action) -> RedirectResponse:
    """Claim the most urgent waiting task of my unit (a lease: it returns to the queue if I do not finish)."""
    try:
        async with transaction(request.app.state.sessionmaker) as session:
            claimed = await seats.take_next(session, user.principal, now=console.now(request),
                                            scale=request.app.state.clock.scale)
    except seats.SeatRefused as exc:
        return back(None, exc.code)
    return back(None, "empty") if claimed is None else back(claimed.task.id, "claimed")


@router.post("/tasks/{task_id}/call")
async def call(task_id: uuid.UUID, request: Request, user: Action) -> RedirectResponse:
    """Click-to-call: ring my seat phone, then bridge to the citizen."""
    state = request.app.state
    try:
        await seats.click_to_call(state.sessionmaker, state.placer, user.principal, task_id,
                                  from_number=state.settings.from_number(), now=console.now(request))
    except seats.SeatRefused as exc:
        return back(task_id, exc.code)
    except Exception:  # Twilio or the network: say so on the page, keep the details in the log
        log.exception("console.call_failed", task_id=str(task_id))
        return back(task_id, "call_failed")
    return back(task_id, "calling")


def loss_details(bank: str, account: str, amount: str, transferred_at: str) -> contracts.LossDetails | None:
    """The emergency form's fields (what the citizen said about the transfer); None when all are empty.

    Raises ValueError when a field cannot be read (an amount that is not a number of CNY).
    """
    if not any(v.strip() for v in (bank, account, amount, transferred_at)):
        return None
    try:
        return contracts.LossDetails(bank=bank.strip() or None, account=account.strip() or None,
                                     amount_lost=amount.strip().replace(",", "") or None,
                                     transferred_at=local_input(transferred_at))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


@router.post("/tasks/{task_id}/disposition")
async def record(task_id: uuid.UUID, request: Request, user: Action, disposition: Text = "", note: Text = "",
                 callback_at: Text = "", loss_bank: Text = "", loss_account: Text = "", loss_amount: Text = "",
                 loss_transferred_at: Text = "") -> RedirectResponse:
    """Record what happened; then the next task follows if my seat is available.

    On an emergency the form also carries what the citizen said about the transfer (bank, account,
    amount, time), which goes with a loss_reported disposition to the task's payment stop.
    """
    sessionmaker, now = request.app.state.sessionmaker, console.now(request)
    try:
        loss = loss_details(loss_bank, loss_account, loss_amount, loss_transferred_at)
    except ValueError:
        return back(task_id, "bad_loss")
    try:
        async with transaction(sessionmaker) as session:
            await seats.dispose(session, user.principal, task_id, disposition=disposition, note=note.strip(),
                                callback_at=local_input(callback_at), now=now,
                                wrap_up_s=request.app.state.clock.real_s(request.app.state.settings.seat_wrap_up_s),
                                loss=loss if disposition == "loss_reported" else None)
    except seats.SeatRefused as exc:
        return back(task_id, exc.code)
    try:
        async with transaction(sessionmaker) as session:
            claimed = await seats.take_next(session, user.principal, now=now, scale=request.app.state.clock.scale)
    except seats.SeatRefused as exc:  # in wrap-up (set available to end it early), or paused or offline meanwhile
        return back(None, "recorded_wrap_up" if exc.code == "wrap_up" else "recorded")
    return back(None, "recorded_empty") if claimed is None else back(claimed.task.id, "recorded_next")
