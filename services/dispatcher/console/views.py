"""Supervisor console pages. Thin: each page asks the domain services and renders; every action is audited there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.dispatcher.console import service
from services.dispatcher.reports import service as reports
from shared.console.web import Console

HERE = Path(__file__).parent

console = Console(
    service="dispatcher", title_key="console.supervisor", roles=("supervisor",), home="/console",
    template_dirs=[HERE / "templates"], messages_files=[HERE / "messages.yaml"],
    now=lambda request: request.app.state.runtime.clock.now(),
)
Page = console.page_user()
Action = console.action_user()
router = APIRouter(prefix="/console", include_in_schema=False)


def sessionmaker(request: Request):  # noqa: ANN201
    return request.app.state.runtime.sessionmaker


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, user: Page) -> HTMLResponse:
    """Live counts by tier and status, compliance today and over 7 days, the most urgent tasks."""
    unit, now = user.principal.unit, console.now(request)
    async with sessionmaker(request)() as session:
        live = await reports.overview(session, unit=unit, now=now, limit=25)
        days = await service.daily_compliance(session, unit=unit, now=now, days=7)
    return console.render(request, "overview.html", user, live=live, days=days, nav="overview")
