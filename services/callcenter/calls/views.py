"""Twilio's webhooks: the call's TwiML, the keypad, and status callbacks. All signature-checked.

Every request must carry a valid X-Twilio-Signature, computed by
twilio.request_validator.RequestValidator over the URL Twilio called (the
CALLCENTER_PUBLIC_URL plus path and query, as Twilio saw it behind any proxy)
and the form fields. A missing or wrong signature gets 403 and changes nothing.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from twilio.request_validator import RequestValidator

from services.callcenter.calls import transfers, twiml
from services.callcenter.calls.service import load_attempt, record_key, record_status
from shared.db import transaction
from shared.sql import sql

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/twilio", include_in_schema=False)


async def signed_form(request: Request) -> dict[str, str]:
    """The request's form fields, once its Twilio signature is verified (403 otherwise)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    settings = request.app.state.settings
    url = settings.public_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not RequestValidator(settings.auth_token()).validate(url, form, signature):
        log.warning("twilio.bad_signature", path=request.url.path, present=bool(signature))
        raise HTTPException(403, "missing or invalid X-Twilio-Signature")
    return form


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
# Row ids in the URLs we give Twilio: refused (422) past bigint rather than failing in the database, should a
# signed URL ever carry one.
RowId = Annotated[int, Query(ge=0, le=2**63 - 1)]
SeatKey = Annotated[str, Query(max_length=64, pattern=r"^[!-~]+$")]


def _xml(body: str) -> Response:
    return Response(body, media_type="application/xml")


def _links(request: Request, attempt_id: int, round_: int) -> dict[str, str]:
    base = request.app.state.settings.public_url.rstrip("/")
    return {"action_url": f"{base}/twilio/gather?attempt={attempt_id}&round={round_}",
            "silence_url": f"{base}/twilio/silence?attempt={attempt_id}&round={round_}"}


@router.post("/voice")
async def voice(request: Request, form: SignedForm, attempt: RowId, round: int = Query(default=1)) -> Response:  # noqa: A002
    """The call is answered: the warning for the fraud type, then one key."""
    async with transaction(request.app.state.sessionmaker) as session:
        row = await load_attempt(session, attempt)
        if row is None:
            raise HTTPException(404, "no such call attempt")
        answered_by = form.get("AnsweredBy", "")
        if answered_by.startswith("machine") or answered_by == "fax":
            await record_status(session, row, {"AnsweredBy": answered_by, "CallStatus": "in-progress"},
                                now=request.app.state.clock.now())
            return _xml(twiml.machine_message(row.lang))
    return _xml(twiml.warning_call(fraud_type=row.fraud_type, lang=row.lang, **_links(request, attempt, round)))


@router.post("/gather")
async def gather(request: Request, form: SignedForm, attempt: RowId, round: int = Query(default=1)) -> Response:  # noqa: A002
    """A key: 1 understood, 2 an officer now (the seats ring), 3 money already sent; anything else is said to be
    wrong and asked again."""
    digits = form.get("Digits", "")
    feedback = twiml.KEYS.get(digits[:1]) if len(digits) == 1 else None
    state = request.app.state
    step = None
    async with transaction(state.sessionmaker) as session:
        row = await load_attempt(session, attempt)
        if row is None:
            raise HTTPException(404, "no such call attempt")
        already = bool(row.digits and any(d in twiml.KEYS for d in row.digits))
        now = state.clock.now()
        if feedback == "callback_requested" and not already and row.channel == "auto_call":
            # Key 2: the seats' phones ring now; the dispatcher holds its call back until the wait ends.
            step = await transfers.start(session, row, now=now, max_seats=state.settings.transfer_ring_seats,
                                         ring_s=state.settings.transfer_ring_s, scale=state.clock.scale)
        await record_key(session, row, digits=digits or "?", feedback=None if already else feedback, now=now,
                         live_transfer_until=now + state.clock.real_delta(state.settings.transfer_ring_s)
                         if step is not None and step.waiting else None)
    log.info("call.key", digits=digits, feedback=feedback, attempt=attempt)
    if feedback is None:
        return _xml(twiml.ask_again(lang=row.lang, wrong_digit=True, **_links(request, attempt, round)))
    if step is not None:
        return _transfer_step(request, step, attempt=attempt, first=True)
    return _xml(twiml.recorded(feedback, row.lang))


def _transfer_step(request: Request, step: transfers.Step, *, attempt: int, first: bool = False) -> Response:
    """The TwiML of a transfer's next step: ring seats, hold, the call-back promise, or goodbye."""
    settings = request.app.state.settings
    base = settings.public_url.rstrip("/")
    query = f"attempt={attempt}&transfer={step.transfer_id}"
    if step.kind == "dial":
        return _xml(twiml.transfer(
            lang=step.lang, seats=step.seats, caller_id=settings.from_number(), ring_s=step.dial_s, first=first,
            action_url=f"{base}/twilio/transfer-end?{query}",
            leg_url=lambda key: f"{base}/twilio/transfer-leg?transfer={step.transfer_id}&seat={quote(key, safe='')}"))
    if step.kind == "hold":
        # Said on the first hold and every third after it; silence (the line stays open) in between.
        return _xml(twiml.transfer_hold(lang=step.lang, next_url=f"{base}/twilio/transfer-next?{query}",
                                        hold_s=transfers.HOLD_S, say=first or step.round % 3 == 1))
    if step.kind == "call_back":
        return _xml(twiml.transfer_fallback(step.lang))
    return _xml(twiml.goodbye(step.lang))


@router.post("/transfer-leg")
async def transfer_leg(request: Request, form: SignedForm, transfer: RowId, seat: SeatKey) -> Response:
    """A seat's phone, rung for a citizen who pressed 2, answered (it gets the citizen and the task) or ended."""
    async with transaction(request.app.state.sessionmaker) as session:
        what = await transfers.leg_status(session, transfer_id=transfer, seat=seat, form=form,
                                          now=request.app.state.clock.now(), scale=request.app.state.clock.scale)
    log.info("transfer.leg", transfer_id=transfer, seat=seat, status=form.get("CallStatus"), result=what)
    return Response(status_code=204)


@router.post("/transfer-end")
async def transfer_end(request: Request, form: SignedForm, attempt: RowId, transfer: RowId) -> Response:
    """A round of ringing is over (the Dial's action): goodbye after a conversation; otherwise ring other seats or
    hold while the minute lasts, then the call-back promise (an officer calls within 10 minutes)."""
    state = request.app.state
    async with transaction(state.sessionmaker) as session:
        if await load_attempt(session, attempt) is None:
            raise HTTPException(404, "no such call attempt")
        step = await transfers.dial_ended(session, transfer_id=transfer, dial_status=form.get("DialCallStatus", ""),
                                          now=state.clock.now(), max_seats=state.settings.transfer_ring_seats,
                                          scale=state.clock.scale)
    log.info("transfer.dial_ended", transfer_id=transfer, dial_status=form.get("DialCallStatus"), next=step.kind)
    return _transfer_step(request, step, attempt=attempt)


@router.post("/transfer-next")
async def transfer_next(request: Request, form: SignedForm, attempt: RowId, transfer: RowId) -> Response:
    """The citizen held for a moment (every seat was busy): look for a free seat again."""
    state = request.app.state
    async with transaction(state.sessionmaker) as session:
        if await load_attempt(session, attempt) is None:
            raise HTTPException(404, "no such call attempt")
        step = await transfers.hold_ended(session, transfer_id=transfer, now=state.clock.now(),
                                          max_seats=state.settings.transfer_ring_seats, scale=state.clock.scale)
    return _transfer_step(request, step, attempt=attempt)


@router.post("/silence")
async def silence(request: Request, form: SignedForm, attempt: RowId, round: int = Query(default=1)) -> Response:  # noqa: A002
    """No key pressed: ask once more, then say goodbye."""
    async with request.app.state.sessionmaker() as session:
        row = await load_attempt(session, attempt)
    if row is None:
        raise HTTPException(404, "no such call attempt")
    if round <= 1:
        return _xml(twiml.ask_again(lang=row.lang, wrong_digit=False, **_links(request, attempt, round + 1)))
    return _xml(twiml.goodbye(row.lang))


@router.post("/status")
async def status(request: Request, form: SignedForm, attempt: RowId) -> Response:
    """Call progress: initiated, ringing, in-progress, and the final status (busy, no-answer, completed...)."""
    async with transaction(request.app.state.sessionmaker) as session:
        row = await load_attempt(session, attempt)
        if row is None:
            raise HTTPException(404, "no such call attempt")
        result = await record_status(session, row, form, now=request.app.state.clock.now(),
                                     scale=request.app.state.clock.scale)
    log.info("call.status", status=form.get("CallStatus"), result=result, attempt=attempt)
    return Response(status_code=204)


@router.post("/bridge")
async def bridge(request: Request, form: SignedForm, attempt: RowId) -> Response:
    """Click-to-call, first leg answered (the seat's phone): now dial the citizen."""
    async with request.app.state.sessionmaker() as session:
        row = await load_attempt(session, attempt)
        if row is None:
            raise HTTPException(404, "no such call attempt")
        citizen = (await session.execute(sql("SELECT to_number FROM call_attempts WHERE id = :id"),
                                         {"id": attempt})).scalar_one()
    settings = request.app.state.settings
    return _xml(twiml.bridge(citizen, caller_id=settings.from_number(), lang=row.lang,
                             action_url=f"{settings.public_url.rstrip('/')}/twilio/dial-status?attempt={attempt}"))


@router.post("/dial-status")
async def dial_status(request: Request, form: SignedForm, attempt: RowId) -> Response:
    """The bridged leg ended: note how (answered, busy, no answer) and close the seat's leg."""
    async with transaction(request.app.state.sessionmaker) as session:
        await session.execute(sql("UPDATE call_attempts SET answered_by = :s, updated_at = :now WHERE id = :id"),
                              {"s": ("citizen:" + form.get("DialCallStatus", "?"))[:24],
                               "now": request.app.state.clock.now(), "id": attempt})
    return _xml(twiml.hangup())
