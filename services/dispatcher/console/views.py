"""Supervisor console pages. Thin: each page asks the domain services and renders; every action is audited there."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from services.dispatcher.audit import service as audit_service
from services.dispatcher.clues import service as clues
from services.dispatcher.console import service
from services.dispatcher.emergencies import service as emergencies
from services.dispatcher.emergencies.models import STATUSES as STOP_STATUSES
from services.dispatcher.emergencies.schemas import PaymentStopIn, field_errors
from services.dispatcher.reports import service as reports
from services.dispatcher.reports.views import csv_response, masks_exports
from services.dispatcher.tasks import service as tasks
from services.dispatcher.visits.field import words as visit_words
from shared import contracts
from shared.audit.keys import Checkpoint
from shared.audit.service import verify_chain
from shared.auth import service as keys
from shared.clock import LOCAL_TZ
from shared.console.sessions import ConsoleUser
from shared.console.web import Console, LiveEmergency, actor_label, reporter
from shared.db import transaction
from shared.phone import mask_phone

HERE = Path(__file__).parent


async def live_emergencies(request: Request, user: ConsoleUser) -> list[LiveEmergency]:
    """The banner: open emergencies in my unit, each linking to its case file."""
    async with sessionmaker(request)() as session:
        found = await emergencies.open_for_banner(session, unit=user.principal.unit)
    return [LiveEmergency(e, href=f"/console/tasks/{e.task_id}") for e in found]


console = Console(
    service="dispatcher", title_key="console.supervisor", roles=("supervisor",), home="/console",
    template_dirs=[HERE / "templates", HERE.parent / "campaigns" / "templates", HERE.parent / "visits" / "templates"],
    messages_files=[HERE / "messages.yaml", HERE.parent / "campaigns" / "messages.yaml",
                    HERE.parent / "visits" / "messages.yaml"],
    now=lambda request: request.app.state.runtime.clock.now(),
    scale=lambda request: request.app.state.runtime.clock.scale,
    live_emergencies=live_emergencies,
)
Page = console.page_user()
Action = console.action_user()
router = APIRouter(prefix="/console", include_in_schema=False)
UNIT_RE = re.compile(r"^(\d{2}|\d{4}|\d{6})$")


def sessionmaker(request: Request):  # noqa: ANN201
    return request.app.state.runtime.sessionmaker


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, user: Page) -> HTMLResponse:
    """Live counts by tier and status, compliance today and over 7 days, the most urgent tasks."""
    unit, now = user.principal.unit, console.now(request)
    async with sessionmaker(request)() as session:
        live = await reports.overview(session, unit=unit, now=now, limit=25)
        days = await service.daily_compliance(session, unit=unit, now=now, days=7)
        open_now = await reports.open_now(session, unit=unit, now=now)
    return console.render(request, "overview.html", user, live=live, days=days, open_now=open_now, nav="overview")


def flashes(t: Any, *, ok: str | None = None, error: str | None = None, **values: Any) -> list[tuple[str, str]]:
    """Messages after a POST-redirect-GET: message keys arrive in the query string, never free text."""
    out = []
    if ok:
        out.append(("ok", t(ok, **values)))
    if error:
        out.append(("error", t(error, **values)))
    return out


# ---- escalations and breaches -----------------------------------------------------------------------

QUEUE_CLOSED_DAYS = 7  # how far back "with closed breaches" looks (deadlines passed since)


def action_label(action: str, t: Any) -> str:
    """An audit action in words (the catalogue's action.* keys); one it has none for: a generic word."""
    key = "action." + action
    text = t(key)
    return t("word.unknown") if text == key else text


@router.get("/queue", response_class=HTMLResponse)
async def queue_page(request: Request, user: Page, ok: str | None = None, error: str | None = None,
                     target: str = "", tier: str = "", unit: str = "", closed: bool = False) -> HTMLResponse:
    """Open tasks escalated or past their deadline, undecided first, each with who worked it last, when it breached
    and one-click reassignment; filtered by tier and unit, optionally with the last week's breaches closed late."""
    t = console.translator(console.lang_of(request))
    principal = user.principal
    problems = []
    tier, unit = tier.strip(), unit.strip()
    if tier and tier not in contracts.TIERS:
        problems.append(t("queue.bad_tier"))
    if unit and (not UNIT_RE.match(unit) or not (unit.startswith(principal.unit) or principal.unit.startswith(unit))):
        problems.append(t("queue.bad_filter_unit"))
    rows: list[Any] = []
    if not problems:
        closed_since = console.now(request) - timedelta(days=QUEUE_CLOSED_DAYS) if closed else None
        # A unit above mine narrows nothing: my own unit bounds what I see anyway.
        within = unit if unit.startswith(principal.unit) and unit != principal.unit else None
        async with sessionmaker(request)() as session:
            rows = await service.escalation_queue(session, unit=principal.unit, tier=tier or None, within=within,
                                                  closed_since=closed_since)
    target = t("queue.seats") if target == "seats" else target
    messages = flashes(t, ok="queue.done" if ok else None, error=error if error in QUEUE_FLASHES else None,
                       target=target) + [("error", p) for p in problems]
    return console.render(request, "queue.html", user, rows=rows, nav="queue", flashes=messages,
                          form={"tier": tier, "unit": unit, "closed": closed}, closed_days=QUEUE_CLOSED_DAYS,
                          who=lambda actor: actor_label(actor, t, console.lang_of(request)), what=lambda action: action_label(action, t),
                          status_code=422 if problems else 200)


QUEUE_FLASHES = ("queue.bad_unit", "queue.closed")


@router.post("/tasks/{task_id}/reassign")
async def reassign(request: Request, task_id: uuid.UUID, user: Action,
                   to: Annotated[str, Form(max_length=20)] = "seats",
                   unit: Annotated[str, Form(max_length=6)] = "",
                   note: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Hand a task to another unit inside mine, or to the seats now; audited in the task service."""
    principal, now = user.principal, console.now(request)
    to_unit: str | None = None
    if to == "unit":
        to_unit = unit.strip()
        if not UNIT_RE.match(to_unit) or not to_unit.startswith(principal.unit):
            return console.redirect(f"/console/queue?error=queue.bad_unit#task-{task_id}")
    async with transaction(sessionmaker(request)) as session:
        task = await tasks.lock_task(session, task_id)
        if task is None or not tasks.in_jurisdiction(task, principal):
            raise HTTPException(404, "no such task in your unit")
        try:
            target = await tasks.reassign(session, task, to_unit=to_unit, actor=principal.actor,
                                          note=note or None, now=now)
        except tasks.TaskClosed:
            return console.redirect("/console/queue?error=queue.closed")
    label = to_unit if target == "unit" else "seats"
    return console.redirect(f"/console/queue?ok=1&target={label}#task-{task_id}")


# ---- the case page ----------------------------------------------------------------------------------

@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: uuid.UUID, user: Page, ok: str | None = None,
                    error: str | None = None, field: str = "", current: str = "") -> HTMLResponse:
    """The case file: who, what (the warnings in order), what was tried, the plan with owners and times left,
    the actions valid now; the tiering reasons, the timeline; for an emergency, its payment stop and its forms."""
    t = console.translator(console.lang_of(request))
    messages = flashes(t, ok=ok if ok in STOP_FLASHES + CASE_FLASHES else None,
                       error=error if error in STOP_FLASHES else None,
                       field=t("stop.field." + field) if field in STOP_FIELDS else "",
                       current=t("stop." + current) if current in STOP_STATUSES else "")
    return await _case_page(request, user, task_id, messages)


async def _case_page(request: Request, user: ConsoleUser, task_id: uuid.UUID, messages: list[tuple[str, str]], *,
                     status_code: int = 200) -> HTMLResponse:
    async with sessionmaker(request)() as session:
        file = await service.task_file(session, unit=user.principal.unit, task_id=task_id,
                                       store=request.app.state.runtime.store, now=console.now(request))
    if file is None:
        return console.render(request, "not_found.html", user, status_code=404, nav="queue")
    lang = console.lang_of(request)
    t = console.translator(lang)
    words = visit_words(console.messages, lang)
    return console.render(request, "task.html", user, nav="queue", mask=mask_phone, flashes=messages,
                          who=lambda actor: reporter(actor, t), left=lambda s: duration_words(s, t),
                          status_code=status_code,
                          **words, **file)


def duration_words(seconds: float | None, t: Any) -> str:
    """'还剩 1 小时 5 分' / '已超过 12 分': a time left (negative: overdue), in whole minutes."""
    if seconds is None:
        return ""
    minutes = int(abs(seconds) // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    span = (t("plan.span_days", d=days, h=hours) if days else t("plan.span_hours", h=hours, m=minutes) if hours
            else t("plan.span_minutes", m=minutes))
    return t("plan.left", span=span) if seconds >= 0 else t("plan.over", span=span)


CASE_FLASHES = ("case.outcome_recorded",)


@router.post("/tasks/{task_id}/outcome", response_class=HTMLResponse)
async def record_outcome(request: Request, task_id: uuid.UUID, user: Action,
                         outcome: Annotated[str, Form(max_length=20)] = "",
                         note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Record an outcome on the task (the feedback API's service and rules). Only the outcomes valid now are
    offered; one posted anyway is answered 409 (422 when it is no outcome at all) on the case page, naming the
    field and why, and nothing changes."""
    t = console.translator(console.lang_of(request))
    async with transaction(sessionmaker(request)) as session:
        task = await tasks.lock_task(session, task_id)
        if task is None or not tasks.in_jurisdiction(task, user.principal):
            return console.render(request, "not_found.html", user, status_code=404, nav="queue")
        allowed = tasks.outcomes_allowed(task)
        if outcome not in contracts.OUTCOMES:
            refusal, status_code = t("case.outcome_unknown"), 422
        elif outcome not in allowed:
            why = ("case.refused_closed" if task.status == "closed" else "case.refused_emergency")
            refusal, status_code = t(why, outcome=t("outcome." + outcome)), 409
        else:
            refusal, status_code = None, 200
            await tasks.apply_feedback(session, task, outcome=outcome, actor=user.principal.actor,
                                       note=note.strip() or None, now=console.now(request),
                                       store=request.app.state.runtime.store, by_person=True, via="feedback")
    if refusal is not None:
        return await _case_page(request, user, task_id, [("error", refusal)], status_code=status_code)
    return console.redirect(f"/console/tasks/{task_id}?ok=case.outcome_recorded#actions")


# ---- emergencies and payment stops (止付) --------------------------------------------------------------

STOP_FLASHES = ("stop.moved", "stop.invalid", "stop.conflict", "stop.nothing")
STOP_FIELDS = ("status", "amount_stopped", "reference", "note", "bank", "account", "amount_lost", "transferred_at")


@router.get("/emergencies", response_class=HTMLResponse)
async def emergencies_page(request: Request, user: Page) -> HTMLResponse:
    """Open emergencies in my unit, newest first: who reported the loss and how, the payment stop and its details."""
    async with sessionmaker(request)() as session:
        rows = await emergencies.list_open(session, unit=user.principal.unit)
    return console.render(request, "emergencies.html", user, rows=rows, nav="emergencies",
                          reporter=lambda actor: reporter(actor, console.translator(console.lang_of(request))))


@router.post("/tasks/{task_id}/payment-stop")
async def payment_stop(request: Request, task_id: uuid.UUID, user: Action,
                       status: Annotated[str, Form(max_length=12)] = "",
                       amount_stopped: Annotated[str, Form(max_length=20)] = "",
                       reference: Annotated[str, Form(max_length=100)] = "",
                       note: Annotated[str, Form(max_length=2000)] = "",
                       bank: Annotated[str, Form(max_length=100)] = "",
                       account: Annotated[str, Form(max_length=64)] = "",
                       amount_lost: Annotated[str, Form(max_length=20)] = "",
                       transferred_at: Annotated[str, Form(max_length=30)] = "") -> Response:
    """Move the payment stop on, or fill in what the citizen said: the same checks and service as the JSON API."""
    here = f"/console/tasks/{task_id}"
    form = {"status": status, "amount_stopped": amount_stopped.replace(",", ""), "reference": reference,
            "note": note, "bank": bank, "account": account, "amount_lost": amount_lost.replace(",", ""),
            "transferred_at": transferred_at}
    fields = {k: v.strip() for k, v in form.items() if v.strip()}
    if "transferred_at" in fields:
        try:
            fields["transferred_at"] = _local_datetime(fields["transferred_at"]).isoformat()
        except ValueError:
            return console.redirect(f"{here}?error=stop.invalid&field=transferred_at#payment-stop")
    try:
        body = PaymentStopIn.model_validate(fields)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else "status"
        return console.redirect(f"{here}?error=stop.invalid&field={field}#payment-stop")
    errors = field_errors(body)
    if errors:
        field = errors[0]["field"]
        return console.redirect(f"{here}?error={'stop.nothing' if not fields else 'stop.invalid'}&field={field}"
                                "#payment-stop")
    loss = None
    if any(v is not None for v in (body.bank, body.account, body.amount_lost, body.transferred_at)):
        loss = contracts.LossDetails(bank=body.bank, account=body.account, amount_lost=body.amount_lost,
                                     transferred_at=body.transferred_at)
    async with transaction(sessionmaker(request)) as session:
        found = await emergencies.get(session, task_id=task_id, principal=user.principal, lock=True)
        if found is None:
            raise HTTPException(404, "no emergency for this task in your unit")
        try:
            await emergencies.move_payment_stop(session, *found, status=body.status,
                                                amount_stopped=body.amount_stopped, reference=body.reference,
                                                note=body.note, loss=loss, actor=user.principal.actor,
                                                now=console.now(request))
        except emergencies.PaymentStopConflict as exc:
            return console.redirect(f"{here}?error=stop.conflict&current={exc.current}#payment-stop")
    return console.redirect(f"{here}?ok=stop.moved#payment-stop")


# ---- ranking ------------------------------------------------------------------------------------------

def _period(now: datetime, days: int) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now


@router.get("/ranking", response_class=HTMLResponse)
async def ranking_page(request: Request, user: Page, days: int = Query(default=7, ge=1, le=92)) -> HTMLResponse:
    """Units below mine, worst compliance first, with the change since the period before, and a chart."""
    start, end = _period(console.now(request), days)
    async with sessionmaker(request)() as session:
        report = await reports.ranking(session, unit=user.principal.unit, from_=start, to=end)
    return console.render(request, "ranking.html", user, report=report, days=days, nav="ranking")


@router.get("/ranking.csv")
async def ranking_csv(request: Request, user: Page, days: int = Query(default=7, ge=1, le=92)) -> Response:
    start, end = _period(console.now(request), days)
    async with sessionmaker(request)() as session:
        report = await reports.ranking(session, unit=user.principal.unit, from_=start, to=end)
    return csv_response(report["units"], f"ranking-{user.principal.unit or 'all'}.csv",
                        mask_numbers=masks_exports(user.principal))


# ---- audit log ----------------------------------------------------------------------------------------

AUDIT_FIELDS = ("id", "task_id", "case_id", "actor", "action", "from", "to")


def _local_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=LOCAL_TZ)


async def _audit_query(session: Any, unit: str, form: dict[str, str]) -> audit_service.Filters:
    """The audit page's filter form, checked: a bad field raises BadFilter naming it (never silently ignored)."""
    parsed: dict[str, Any] = {}
    for name, key, parse in (("task_id", "task_id", uuid.UUID), ("case_id", "case_id", uuid.UUID),
                             ("from_", "from", _local_datetime), ("to", "to", _local_datetime)):
        if form[key]:
            try:
                parsed[name] = parse(form[key])
            except ValueError:
                raise audit_service.BadFilter(key, "not a valid value", code="bad_" + name.rstrip("_")) from None
    return await audit_service.check_filters(session, unit=unit, id_prefix=form["id"] or None,
                                             actor=form["actor"] or None, action=form["action"] or None, **parsed)


def _audit_form(**values: str) -> dict[str, str]:
    return {k: (values.get(k) or "").strip() for k in AUDIT_FIELDS}


def _action_choices(t: Any) -> list[tuple[str, str]]:
    """The action filter's options: each family, then each action, in words."""
    families = sorted({a.split(".")[0] for a in audit_service.ACTIONS})
    return ([(f, t("audit.family." + f)) for f in families]
            + sorted(((a, action_label(a, t)) for a in audit_service.ACTIONS), key=lambda c: c[0]))


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, user: Page, id: str = "", task_id: str = "", case_id: str = "",  # noqa: A002
                     actor: str = "", action: str = "", from_: str = Query(default="", alias="from"), to: str = "",
                     before: int | None = None) -> HTMLResponse:
    """The dispatch log, newest first, filterable by id prefix (task, case, warning), actor, action and time; CSV
    export; chain check. A bad filter is a 422 page naming the field; an ambiguous id lists its matches."""
    form = _audit_form(id=id, task_id=task_id, case_id=case_id, actor=actor, action=action, to=to, **{"from": from_})
    t = console.translator(console.lang_of(request))
    rows, older, problem, entity = [], None, None, None
    async with sessionmaker(request)() as session:
        try:
            filters = await _audit_query(session, user.principal.unit, form)
        except audit_service.BadFilter as exc:
            problem = exc
        else:
            entity = filters.entity
            if not (filters.id_given and entity is None):
                rows, older = await audit_service.search(
                    session, unit=user.principal.unit, cursor=before, limit=100, newest_first=True,
                    task_id=filters.task_id, case_id=filters.case_id, actor=filters.actor, action=filters.action,
                    from_=filters.from_, to=filters.to)
    error = None
    if problem is not None:
        error = t("audit.error." + problem.code, field=t("audit.field." + problem.field), n=len(problem.matches),
                  min=audit_service.MIN_PREFIX_HEX)
    elif form["id"] and entity is None:
        error = t("audit.error.id_none")
    return console.render(request, "audit.html", user, rows=rows, older=older, form=form, nav="audit",
                          query=urlencode({k: v for k, v in form.items() if v}), error=error,
                          error_field=problem.field if problem else ("id" if error else None),
                          matches=problem.matches if problem else [], entity=entity,
                          actions=_action_choices(t), short=audit_service.short_id,
                          who=lambda a: actor_label(a, t, console.lang_of(request)), what=lambda a: action_label(a, t),
                          status_code=422 if problem else 200)


@router.get("/audit.csv")
async def audit_csv(request: Request, user: Page, id: str = "", task_id: str = "", case_id: str = "",  # noqa: A002
                    actor: str = "", action: str = "", from_: str = Query(default="", alias="from"),
                    to: str = "") -> Response:
    """The filtered log as CSV: numbers masked for supervisors; for admins, bodies exactly as hashed (checkable)."""
    form = _audit_form(id=id, task_id=task_id, case_id=case_id, actor=actor, action=action, to=to, **{"from": from_})
    async with sessionmaker(request)() as session:
        try:
            filters = await _audit_query(session, user.principal.unit, form)
        except audit_service.BadFilter as exc:
            return Response(str(exc), status_code=422, media_type="text/plain; charset=utf-8")
        rows: list[Any] = []
        if not (filters.id_given and filters.entity is None):
            rows, _ = await audit_service.search(
                session, unit=user.principal.unit, limit=10_000, task_id=filters.task_id, case_id=filters.case_id,
                actor=filters.actor, action=filters.action, from_=filters.from_, to=filters.to)
    return csv_response([{"seq": r.seq, "at": r.at.isoformat(), "actor": r.actor, "action": r.action,
                          "task_id": r.task_id or "", "case_id": r.case_id or "", "region_code": r.region_code or "",
                          "body": r.body, "hash": r.hash} for r in rows], "audit.csv",
                        mask_numbers=masks_exports(user.principal))


@router.get("/audit/verify", response_class=HTMLResponse)
async def audit_verify(request: Request, user: Page, checkpoint: str = "") -> HTMLResponse:
    """Recompute the whole hash chain, against a checkpoint when one is given (loaded on demand: it reads every entry)."""
    key = request.app.state.runtime.audit_key
    try:
        signed = Checkpoint.parse(checkpoint, key) if checkpoint.strip() else None
    except ValueError as exc:
        return console.render(request, "audit_verify.html", user, report=None, checkpoint_error=str(exc))
    async with sessionmaker(request)() as session:
        report = await verify_chain(session, key=key, checkpoint=signed)
    return console.render(request, "audit_verify.html", user, report=report, checkpoint=signed)


# ---- clue mailbox -------------------------------------------------------------------------------------

@router.get("/clues", response_class=HTMLResponse)
async def clues_page(request: Request, user: Page, status: str = "", overdue: bool = False,
                     error: str | None = None) -> HTMLResponse:
    """Clues in my unit, overdue first; route, answer and close them."""
    now = console.now(request)
    async with sessionmaker(request)() as session:
        rows = await clues.list_clues(session, unit=user.principal.unit, status=status or None,
                                      overdue_only=overdue, now=now)
    overdue_n = sum(1 for c in rows if clues.is_overdue(c, now))
    t = console.translator(console.lang_of(request))
    return console.render(request, "clues.html", user, rows=rows, status=status, overdue=overdue,
                          overdue_n=overdue_n, nav="clues", mask=mask_phone, flashes=flashes(t, error=error))


@router.post("/clues/{clue_id}/{step}")
async def clue_step(request: Request, clue_id: uuid.UUID, step: str, user: Action,
                    unit: Annotated[str, Form(max_length=6)] = "",
                    answer: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """One step of a clue's workflow: route (to a unit inside mine), answer (text for the citizen), close."""
    principal, now = user.principal, console.now(request)
    if step not in ("route", "answer", "close"):
        raise HTTPException(404, "unknown step")
    if step == "route" and (not UNIT_RE.match(unit.strip()) or not unit.strip().startswith(principal.unit)):
        return console.redirect(f"/console/clues?error=queue.bad_unit#clue-{clue_id}")
    if step == "answer" and not answer.strip():
        return console.redirect(f"/console/clues?error=clues.answer_placeholder#clue-{clue_id}")
    async with transaction(sessionmaker(request)) as session:
        clue = await clues.lock_clue(session, clue_id, unit=principal.unit)
        if clue is None:
            raise HTTPException(404, "no such clue in your unit")
        try:
            await clues.apply_step(session, clue, step=step, unit=unit.strip(), answer=answer, actor=principal.actor,
                             now=now)
        except clues.ClueStateError:
            return console.redirect(f"/console/clues#clue-{clue_id}")
    return console.redirect(f"/console/clues#clue-{clue_id}")


# ---- deadline compliance --------------------------------------------------------------------------

async def _decided_report(request: Request, user: ConsoleUser, days: int) -> dict[str, Any]:
    """Tasks decided from local midnight `days - 1` days ago until now (1 = today), the overview's rule."""
    now = console.now(request)
    async with sessionmaker(request)() as session:
        return await reports.decided_compliance(session, unit=user.principal.unit,
                                                from_=service.local_day_start(now, days - 1),
                                                to=now + timedelta(microseconds=1), now=now)  # up to and with now


@router.get("/compliance", response_class=HTMLResponse)
async def compliance_page(request: Request, user: Page, days: int = Query(default=7, ge=1, le=92)) -> HTMLResponse:
    """Deadline compliance per tier for tasks decided in the period (today by default on the 1-day view), beside
    the tasks still open now and at risk; reach, times, outcomes."""
    report = await _decided_report(request, user, days)
    async with sessionmaker(request)() as session:
        trend = await reports.daily_trend(session, unit=user.principal.unit, now=console.now(request),
                                          days=TREND_DAYS)
    lang = console.lang_of(request)
    return console.render(request, "compliance.html", user, report=report, days=days, nav="compliance",
                          outcomes=reports.OUTCOMES, trend=chart_data(trend, console.translator(lang),
                                                                      visit_words(console.messages, lang)["region"]),
                          trend_days=TREND_DAYS)


TREND_DAYS = 30


def chart_data(trend: dict[str, Any], t: Any, region: Any) -> dict[str, Any]:
    """The trend as the page's chart reads it (static/trend.js): labels in words, rates in per cent, counts."""
    tiers = [{"key": tier, "label": t("compliance.total") if tier == "all" else t("tier.long." + tier)}
             for tier in reports.TREND_TIERS]
    units = [{"key": "", "label": t("trend.whole", unit=region(trend["unit"]) if trend["unit"] else t("unit.all"))}]
    units += [{"key": code, "label": region(code)} for code in trend["units"]]
    return {
        "labels": [d.strftime("%m-%d") for d in trend["days"]], "tiers": tiers, "units": units,
        "y_label": t("col.compliance"), "count_label": t("trend.count"),
        "rate": {key: {tier: [None if r is None else round(r * 100, 1) for r in figures["rate"]]
                       for tier, figures in by_tier.items()} for key, by_tier in trend["series"].items()},
        "counts": {key: {tier: list(zip(figures["in_time"], figures["decided"], strict=True))
                         for tier, figures in by_tier.items()} for key, by_tier in trend["series"].items()},
    }


@router.get("/compliance.csv")
async def compliance_csv(request: Request, user: Page, days: int = Query(default=7, ge=1, le=92)) -> Response:
    report = await _decided_report(request, user, days)
    return csv_response(reports.compliance_rows(report), f"compliance-{user.principal.unit or 'all'}.csv",
                        mask_numbers=masks_exports(user.principal))


# ---- API keys (admins only) ---------------------------------------------------------------------------

KEY_FLASHES = ("keys.revoked", "keys.not_self")


def _not_admin(request: Request, user: ConsoleUser) -> HTMLResponse | None:
    """Key management is an admin's: anyone else gets the 403 page, in words."""
    if user.principal.role == "admin":
        return None
    return console.render(request, "forbidden.html", user, status_code=403, nav="keys",
                          reason_key="keys.admins_only")


async def _keys_page(request: Request, user: ConsoleUser, *, status_code: int = 200,
                     **context: Any) -> HTMLResponse:
    async with sessionmaker(request)() as session:
        rows = await keys.list_keys(session, unit=user.principal.unit)
    context.setdefault("form", {"role": "operator", "unit": user.principal.unit, "name": ""})
    return console.render(request, "keys.html", user, rows=rows, roles=keys.ROLES, nav="keys",
                          status_code=status_code, cache_s=round(request.app.state.key_cache.ttl_s), **context)


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request, user: Page, ok: str | None = None) -> HTMLResponse:
    """Every key in my unit (role, unit, name, created, last used, revoked), a form to create one, revoke links."""
    if (refused := _not_admin(request, user)) is not None:
        return refused
    t = console.translator(console.lang_of(request))
    return await _keys_page(request, user, flashes=flashes(t, ok=ok if ok == "keys.revoked" else None,
                                                           error=ok if ok == "keys.not_self" else None))


def _key_form_error(role: str, unit: str, name: str, principal: Any) -> str | None:
    """The first field of the create form that is wrong (its name), else None."""
    if role not in keys.ROLES:
        return "role"
    try:
        normalized = keys.normalize_unit(unit)
    except keys.InvalidKeySpec:
        return "unit"
    if not normalized.startswith(principal.unit):
        return "unit"
    if not name.strip():
        return "name"
    return None


@router.post("/keys", response_class=HTMLResponse)
async def create_key(request: Request, user: Action, role: Annotated[str, Form(max_length=16)] = "",
                     unit: Annotated[str, Form(max_length=6)] = "",
                     name: Annotated[str, Form(max_length=100)] = "") -> HTMLResponse:
    """Create a key in my unit; the page shows its secret this once (only its hash is stored). Audited."""
    if (refused := _not_admin(request, user)) is not None:
        return refused
    t = console.translator(console.lang_of(request))
    form = {"role": role, "unit": unit.strip(), "name": name.strip()}
    field = _key_form_error(role, unit, name, user.principal)
    if field is not None:
        return await _keys_page(request, user, status_code=422, form=form, error_field=field,
                                flashes=[("error", t("keys.error." + field, unit=user.principal.unit or t("unit.all")))])
    async with transaction(sessionmaker(request)) as session:
        row, secret = await keys.issue_key(session, role=role, unit=unit, name=name, issuer=user.principal,
                                           now=console.now(request))
    return await _keys_page(request, user, created=row, secret=secret,
                            flashes=[("ok", t("keys.created", name=row.name))])


@router.get("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def confirm_revoke(request: Request, key_id: str, user: Page) -> HTMLResponse:
    """The confirmation step before a key is revoked: which key, what stops working."""
    if (refused := _not_admin(request, user)) is not None:
        return refused
    async with sessionmaker(request)() as session:
        row = next((k for k in await keys.list_keys(session, unit=user.principal.unit) if k.key_id == key_id), None)
    if row is None:
        return console.render(request, "not_found.html", user, status_code=404, nav="keys")
    if row.key_id == user.principal.key_id:
        return console.redirect("/console/keys?ok=keys.not_self")
    return console.render(request, "key_revoke.html", user, key=row, nav="keys",
                          cache_s=round(request.app.state.key_cache.ttl_s))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, user: Action,
                     confirm: Annotated[str, Form(max_length=10)] = "") -> Response:
    """Revoke a key in my unit once confirmed; it stops working here at once, its console sessions end. Audited."""
    if (refused := _not_admin(request, user)) is not None:
        return refused
    if key_id == user.principal.key_id:  # it would sign this admin out for good; another admin may do it
        return console.redirect("/console/keys?ok=keys.not_self")
    if confirm != "yes":
        return console.redirect(f"/console/keys/{key_id}/revoke")
    try:
        async with transaction(sessionmaker(request)) as session:
            await keys.revoke_key(session, key_id=key_id, issuer=user.principal, now=console.now(request))
    except keys.KeyNotFound:
        return console.render(request, "not_found.html", user, status_code=404, nav="keys")
    request.app.state.key_cache.forget(key_id)
    return console.redirect("/console/keys?ok=keys.revoked")
