"""The supervisor console's visits view (/console/visits): live visits per unit, overdue ones red; send a visit now.

Thin over service.py and flows.py, as the API is. The page refreshes its table
in place every 15 s with htmx (and works without it).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from services.dispatcher.console.views import Action, Page, console
from services.dispatcher.visits import flows, service
from services.dispatcher.visits.field import words
from services.dispatcher.visits.models import CLAIMED, OPEN

router = APIRouter(include_in_schema=False)


def sessionmaker(request: Request):  # noqa: ANN201
    return request.app.state.runtime.sessionmaker


def per_unit(views: list[service.VisitView], reported: dict[str, dict[str, int]], now: Any) -> list[dict[str, Any]]:
    """Open, claimed, overdue and reported today, per unit, busiest overdue first."""
    units: dict[str, dict[str, Any]] = {}

    def row(unit: str) -> dict[str, Any]:
        return units.setdefault(unit, {"unit": unit, "open": 0, "claimed": 0, "overdue": 0, "reported": 0})

    for v in views:
        r = row(v.visit.unit)
        r["open" if v.visit.status == OPEN else "claimed"] += 1
        if v.due_at < now:
            r["overdue"] += 1
    for unit, outcomes in reported.items():
        row(unit)["reported"] = sum(outcomes.values())
    return sorted(units.values(), key=lambda r: (-r["overdue"], -(r["open"] + r["claimed"]), r["unit"]))


@router.get("/console/visits", response_class=HTMLResponse)
async def visits_page(request: Request, user: Page, ok: str | None = None,
                      error: str | None = None) -> HTMLResponse:
    """Live visits in my unit, nearest deadline first, with counts per unit; unclaimed past the deadline in red."""
    unit, now = user.principal.unit, console.now(request)
    async with sessionmaker(request)() as session:
        live = await service.live_in_unit(session, unit=unit)
        reported = await service.reported_counts(session, unit=unit, since=service.start_of_day(now))
    lang = console.lang_of(request)
    t = console.translator(lang)
    flashes = [("ok", t("visits.sent"))] if ok else []
    if error in ("visits.closed", "visits.gone"):
        flashes.append(("error", t(error)))
    return console.render(request, "visits.html", user, nav="visits", live=live, units=per_unit(live, reported, now),
                          minutes_left=service.minutes_left, actor_name=service.actor_name, CLAIMED=CLAIMED,
                          flashes=flashes, **words(console.messages, lang))


@router.post("/console/tasks/{task_id}/visits")
async def send_visit(request: Request, task_id: uuid.UUID, user: Action,
                     note: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Send officers of the task's district now (from the case page), with a note for them; audited."""
    try:
        made = await flows.run_request(sessionmaker(request), task_id, user.principal, note=note.strip() or None,
                                       now=console.now(request))
    except flows.TaskIsClosed:
        return console.redirect("/console/visits?error=visits.closed")
    if made is None:
        raise HTTPException(404, "no such task in your unit")
    return console.redirect(f"/console/visits?ok=1#visit-{made[0]}")
