"""The officers' page (GET /field): their visits on a phone, outdoors. Claim, call, report: two taps each.

A second console on the dispatcher, on the shared frame (shared/console): its
own sign-in at /field/sign-in, its own session cookie, CSRF on every form,
Chinese by default. Thin over flows.py, which the API shares. Every action is
a plain form (POST, then 303 back to the list), so the page works without
JavaScript on a weak connection; a report form carries a one-time key, so a
submit retried by the browser is recorded once.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Annotated, Any

import phonenumbers
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.dispatcher.emergencies import service as emergencies
from services.dispatcher.tasks import service as tasks
from services.dispatcher.visits import flows, service
from services.dispatcher.visits.models import CLAIMED, OPEN, REPORTED
from services.dispatcher.visits.schemas import TriedOut
from shared.console.sessions import ConsoleUser
from shared.console.web import Console, LiveEmergency, say
from shared.contracts import VISIT_OUTCOMES
from shared.i18n import Catalog
from shared.regions import region_name
from shared.web import FieldErrors

HERE = Path(__file__).parent
MESSAGES = HERE / "messages.yaml"



async def live_emergencies(request: Request, user: ConsoleUser) -> list[LiveEmergency]:
    """The red banner on the officers' page: open emergencies in my unit; one with a visit links to its card."""
    async with sessionmaker(request)() as session:
        found = await emergencies.open_for_banner(session, unit=user.principal.unit)
        visits = {v.task_id: v.id for v in await service.live_for_tasks(session, [e.task_id for e in found])}
    return [LiveEmergency(e, href=f"/field#visit-{visits[e.task_id]}", hint_key="field.banner_to_visit")
            if e.task_id in visits else LiveEmergency(e, hint_key="field.banner_no_visit") for e in found]


field = Console(
    service="dispatcher", name="field", base="/field", title_key="field.title", roles=("officer",), home="/field",
    template_dirs=[HERE / "templates"], messages_files=[MESSAGES],
    now=lambda request: request.app.state.runtime.clock.now(), live_emergencies=live_emergencies,
    scale=lambda request: request.app.state.runtime.clock.scale,
)
Page = field.page_user()
Action = field.action_user()
router = APIRouter(prefix="/field", include_in_schema=False)

# Flash messages arrive as keys in the query string after a POST-redirect-GET, never as free text.
FLASHES = {"claimed": ("ok", "field.claimed_ok"), "reported": ("ok", "field.reported_ok"),
           "conflict": ("error", "field.conflict"), "gone": ("error", "field.gone"),
           "emergency": ("error", "field.emergency_refused")}


def sessionmaker(request: Request):  # noqa: ANN201
    return request.app.state.runtime.sessionmaker


# ---- words for the page -------------------------------------------------------------------------------

def phone_readable(e164: str) -> str:
    """'+8613800138000' -> '138 0013 8000': read aloud or typed by hand if the tel: link fails."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    fmt = phonenumbers.PhoneNumberFormat.NATIONAL if number.country_code == 86 else \
        phonenumbers.PhoneNumberFormat.INTERNATIONAL
    return phonenumbers.format_number(number, fmt)


def words(messages: Catalog, lang: str) -> Any:
    """Helpers the templates use to say codes in words (a known code never shows as itself)."""
    t = messages.translator(lang)

    def word(prefix: str, value: str | None, fallback: str | None = None) -> str:
        return say(messages, lang, prefix, value, fallback)

    def region(code: str) -> str:
        """The region's name with its code: 杭州市西湖区 (330106). The code stays in the text here, not on hover:
        an officer's phone has no hover, and the code is what the radio and the case papers use."""
        name = region_name(code, lang)
        return f"{name} ({code})" if name != code else code

    def tried(item: TriedOut) -> str:
        if item.kind == "event":
            text = word("event", item.result, "event.other")
            if item.channel and item.channel != "visit":
                text += f" · {word('channel', item.channel)}"
            colon = "：" if lang == "zh" else ": "
            return f"{text}{colon}{item.note}" if item.note else text
        channel = word("channel", item.channel)
        if item.kind == "answer":
            return f"{channel} · {t('tried.answer', what=word('feedback', item.result))}"
        attempt = f" · {t('tried.attempt', n=item.attempt)}" if item.attempt else ""
        return f"{channel}{attempt} · {word('result', item.result)}"

    return {"word": word, "region": region, "tried_text": tried, "phone_readable": phone_readable}


def render(request: Request, template: str, user: Any, **context: Any) -> HTMLResponse:
    lang = field.lang_of(request)
    return field.render(request, template, user, **words(field.messages, lang), **context)


# ---- the page -------------------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
async def field_page(request: Request, user: Page, ok: str | None = None, error: str | None = None) -> HTMLResponse:
    """My unit's open visits, the ones I claimed, and today's done, nearest deadline first, each with its story."""
    principal, now = user.principal, field.now(request)
    async with sessionmaker(request)() as session:
        views = await service.officer_list(session, principal, now=now)
        tried = {v.visit.id: await service.tried(session, v.visit.task_id) for v in views}
    t = field.translator(field.lang_of(request))
    flashes = [(FLASHES[k][0], t(FLASHES[k][1])) for k in (ok, error) if k in FLASHES]
    live = [v for v in views if v.visit.status in (OPEN, CLAIMED)]
    done = [v for v in views if v.visit.status == REPORTED]
    return render(request, "field.html", user, live=live, done=done, tried=tried, flashes=flashes,
                  minutes_left=service.minutes_left, outcomes=VISIT_OUTCOMES, actor_name=service.actor_name,
                  emergency_outcomes=("loss_reported", "not_found"),
                  report_key=lambda: secrets.token_urlsafe(12))


@router.post("/visits/{visit_id}/claim")
async def claim(request: Request, visit_id: uuid.UUID, user: Action) -> Response:
    """Tap one: I'm going."""
    try:
        claimed = await flows.run_claim(sessionmaker(request), visit_id, user.principal, now=field.now(request))
    except service.VisitConflict:
        return field.redirect(f"/field?error=conflict#visit-{visit_id}")
    if claimed is None:
        return field.redirect("/field?error=gone")
    return field.redirect(f"/field?ok=claimed#visit-{visit_id}")


@router.post("/visits/{visit_id}/report")
async def report(request: Request, visit_id: uuid.UUID, user: Action,
                 outcome: Annotated[str, Form(max_length=20)] = "",
                 note: Annotated[str, Form(max_length=2000)] = "",
                 report_key: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Tap two: the outcome's button. A resubmitted form (same key) is recorded once."""
    if outcome not in VISIT_OUTCOMES:
        raise FieldErrors([{"field": "outcome", "reason": f"must be one of {', '.join(VISIT_OUTCOMES)}"}])
    try:
        result = await flows.run_report(sessionmaker(request), visit_id, user.principal, outcome=outcome,
                                        note=note.strip() or None, met_at=None, idempotency_key=report_key or None,
                                        now=field.now(request), store=request.app.state.runtime.store)
    except tasks.EmergencyOutcomeRefused:
        return field.redirect(f"/field?error=emergency#visit-{visit_id}")
    except (flows.ReportRefused, tasks.TaskClosed):
        return field.redirect(f"/field?error=conflict#visit-{visit_id}")
    if result is None:
        return field.redirect("/field?error=gone")
    return field.redirect(f"/field?ok=reported#visit-{visit_id}")
