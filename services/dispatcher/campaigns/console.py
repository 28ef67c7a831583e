"""Supervisor console pages for campaigns (精准宣防): list, new (with a preview count), detail with live progress.

Thin over service.py, as the API is: the same validation (CampaignIn), the same
scope rule, the same audit records. Every POST goes through `Action` (a live
session, the CSRF token, no foreign Origin). Pages work without JavaScript;
htmx only fetches the preview count in place and refreshes the progress bar
every second while the campaign is live (the fragment stops polling when done).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from services.dispatcher.campaigns import models as m
from services.dispatcher.campaigns import service
from services.dispatcher.campaigns.schemas import DEFAULT_DAYS, MAX_TEXT, CampaignIn, PreviewIn, message_templates
from services.dispatcher.console.views import Action, Page, console
from services.dispatcher.warnings.schemas import FRAUD_TYPES
from shared.console.sessions import ConsoleUser
from shared.console.web import form_error
from shared.db import transaction
from shared.web import FieldErrors

router = APIRouter(prefix="/console/campaigns", include_in_schema=False)


def sessionmaker(request: Request):  # noqa: ANN201
    return request.app.state.runtime.sessionmaker


# ---- the form ---------------------------------------------------------------------------------------------

def _form_values(form: Any) -> dict[str, Any]:
    """What the form holds, as strings (re-rendered as typed when something needs fixing)."""
    return {
        "name": (form.get("name") or "").strip(),
        "region_prefix": (form.get("region_prefix") or "").strip(),
        "age_min": (form.get("age_min") or "").strip(),
        "age_max": (form.get("age_max") or "").strip(),
        "fraud_types": [str(v) for v in form.getlist("fraud_types")],
        "days": (form.get("days") or "").strip() or str(DEFAULT_DAYS),
        # One radio group: "template:<key>" or "own".
        "message": "own" if form.get("choice") == "own" else "template",
        "template": str(form.get("choice") or "").removeprefix("template:") if form.get("choice") != "own" else "",
        "text": form.get("text") or "",
        "lang": form.get("lang") or "zh",
        "send_at": (form.get("send_at") or "").strip(),
        "client_ref": (form.get("client_ref") or "").strip() or secrets.token_urlsafe(12),
    }


def _segment(values: dict[str, Any]) -> dict[str, Any]:
    return {"region_prefix": values["region_prefix"] or None, "age_min": values["age_min"] or None,
            "age_max": values["age_max"] or None, "fraud_types": values["fraud_types"], "days": values["days"]}


def _payload(values: dict[str, Any]) -> dict[str, Any]:
    own = values["message"] == "own"
    return {"name": values["name"], "segment": _segment(values), "template": None if own else values["template"] or None,
            "text": values["text"] if own else None, "lang": values["lang"], "send_at": values["send_at"] or None,
            "client_ref": values["client_ref"]}


# The form's own checks (schemas.py raises them in English for the API), by the start of their message.
_VALUE_ERRORS = {"must not be below age_min": "campaign.error.age_order", "unknown template": "form.error.choose",
                 "give either a template": "campaign.error.template_or_text",
                 "must not be empty": "campaign.error.text_empty"}
# The service's checks of the send time (FieldErrors), by the start of their reason.
_SEND_AT_ERRORS = {"is in the past": "campaign.error.send_past", "must be within": "campaign.error.send_far"}


def _errors(exc: ValidationError, t: Any) -> dict[str, str]:
    """Field errors keyed by the form's input names (segment.age_min -> age_min), in the reader's language."""
    out: dict[str, str] = {}
    for err in exc.errors():
        names = [p for p in err.get("loc", ()) if isinstance(p, str)]
        key = names[-1] if names else "name"
        out.setdefault(key, form_error(err, t, value_errors=_VALUE_ERRORS))
    return out


def _field_errors(exc: FieldErrors, t: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in exc.errors:
        key = next((k for start, k in _SEND_AT_ERRORS.items() if str(e["reason"]).startswith(start)),
                   "form.error.invalid")
        out.setdefault(str(e["field"]).split(".")[-1], t(key, n=service.MAX_AHEAD.days))
    return out


def _form_page(request: Request, user: ConsoleUser, values: dict[str, Any], *, errors: dict[str, str] | None = None,
               count: int | None = None, status_code: int = 200) -> HTMLResponse:
    t = console.translator(console.lang_of(request))
    return console.render(
        request, "campaign_new.html", user, nav="campaigns", values=values, errors=errors or {}, count=count,
        templates=message_templates()["templates"], fraud_types=FRAUD_TYPES, max_text=MAX_TEXT,
        status_code=status_code, flashes=[("error", t("campaign.fix_errors"))] if errors else [])


# ---- pages --------------------------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
async def list_page(request: Request, user: Page) -> HTMLResponse:
    """Campaigns targeting inside my unit, newest first, each with its progress."""
    async with sessionmaker(request)() as session:
        rows = await service.list_campaigns(session, unit=user.principal.unit, limit=100)
    return console.render(request, "campaign_list.html", user, nav="campaigns",
                          campaigns=[service.out(r) for r in rows])


class _EmptyForm(dict):
    def getlist(self, _key: str) -> list[str]:
        return []


@router.get("/new", response_class=HTMLResponse)
async def new_page(request: Request, user: Page) -> HTMLResponse:
    values = _form_values(_EmptyForm())
    values.update(region_prefix=user.principal.unit, template=next(iter(message_templates()["templates"])))
    return _form_page(request, user, values)


@router.post("/preview", response_class=HTMLResponse)
async def preview(request: Request, user: Action) -> HTMLResponse:
    """The count for the segment on the form: a fragment for htmx, the whole form for a plain submit."""
    values = _form_values(await request.form())
    errors: dict[str, str] = {}
    count = None
    try:
        body = PreviewIn.model_validate({"segment": _segment(values)})
        segment = service.scoped_segment(body.segment, unit=user.principal.unit)
        async with sessionmaker(request)() as session:
            count = await service.preview_count(session, segment, now=console.now(request))
    except ValidationError as exc:
        errors = _errors(exc, console.translator(console.lang_of(request)))
    except service.OutOfScope:
        errors = {"region_prefix": console.translator(console.lang_of(request))("form.error.out_of_unit")}
    if request.headers.get("hx-request"):
        return console.render(request, "campaign_preview.html", user, count=count, errors=errors)
    return _form_page(request, user, values, errors=errors, count=count, status_code=422 if errors else 200)


@router.post("", response_class=HTMLResponse)
async def create(request: Request, user: Action) -> Response:
    """Schedule the campaign on the form (a double submit returns the first), then show its progress."""
    t = console.translator(console.lang_of(request))
    values = _form_values(await request.form())
    try:
        data = CampaignIn.model_validate(_payload(values))
        async with transaction(sessionmaker(request)) as session:
            created = await service.create(session, user.principal, data, now=console.now(request))
    except ValidationError as exc:
        return _form_page(request, user, values, errors=_errors(exc, t), status_code=422)
    except FieldErrors as exc:
        return _form_page(request, user, values, errors=_field_errors(exc, t), status_code=422)
    except service.OutOfScope:
        return _form_page(request, user, values, errors={"region_prefix": t("form.error.out_of_unit")},
                          status_code=403)
    return console.redirect(f"/console/campaigns/{created.campaign.id}?ok=scheduled")


async def _load(request: Request, user: ConsoleUser, campaign_id: uuid.UUID) -> tuple[Any, list[dict[str, Any]]]:
    async with sessionmaker(request)() as session:
        row = await service.get(session, campaign_id, unit=user.principal.unit)
        if row is None:
            raise HTTPException(404, "no such campaign in your unit")
        return row, await service.errors_of(session, campaign_id)


@router.get("/{campaign_id}", response_class=HTMLResponse)
async def detail_page(request: Request, campaign_id: uuid.UUID, user: Page, ok: str | None = None,
                      error: str | None = None) -> HTMLResponse:
    """The campaign: segment, message, a live progress bar and the delivery report."""
    row, errors = await _load(request, user, campaign_id)
    t = console.translator(console.lang_of(request))
    flashes = []
    if ok in ("scheduled", "cancelled"):
        flashes.append(("ok", t(f"campaign.{ok}_ok")))
    if error == "not_cancellable":
        flashes.append(("error", t("campaign.not_cancellable")))
    return console.render(request, "campaign_detail.html", user, nav="campaigns", c=service.out(row, errors),
                          live=row.status in m.LIVE, flashes=flashes)


@router.get("/{campaign_id}/progress", response_class=HTMLResponse)
async def progress_fragment(request: Request, campaign_id: uuid.UUID, user: Page) -> HTMLResponse:
    """The progress bar and report alone (htmx polls it every second while the campaign is live)."""
    row, errors = await _load(request, user, campaign_id)
    return console.render(request, "campaign_progress.html", user, c=service.out(row, errors),
                          live=row.status in m.LIVE)


@router.post("/{campaign_id}/cancel")
async def cancel(request: Request, campaign_id: uuid.UUID, user: Action) -> Response:
    try:
        async with transaction(sessionmaker(request)) as session:
            row = await service.cancel(session, user.principal, campaign_id, now=console.now(request))
    except service.NotCancellable:
        return console.redirect(f"/console/campaigns/{campaign_id}?error=not_cancellable")
    if row is None:
        raise HTTPException(404, "no such campaign in your unit")
    return console.redirect(f"/console/campaigns/{campaign_id}?ok=cancelled")
