"""Reports for supervisors: deadline compliance and regional ranking, as JSON or CSV (Accept: text/csv)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from services.dispatcher.deps import RuntimeDep, SupervisorKey
from services.dispatcher.reports import service
from shared.auth.service import Principal
from shared.phone import mask_sensitive_text
from shared.sql import dumps
from shared.web import AwareTime, FieldErrors

router = APIRouter(prefix="/v1/reports", tags=["reports"])


def _scope(principal: Principal, unit: str | None) -> str:
    """The unit asked for, which must lie inside the key's own (default: the key's unit)."""
    if unit is None:
        return principal.unit
    if not unit.startswith(principal.unit):
        raise HTTPException(403, f"unit {unit} is outside this key's unit ({principal.unit or 'nationwide'})")
    return unit


def _period(rt: RuntimeDep, from_: datetime | None, to: datetime | None) -> tuple[datetime, datetime]:
    to = to or rt.clock.now()
    from_ = from_ or to - timedelta(days=7)
    if from_ >= to:
        raise FieldErrors.one("from", "must be before to")
    return from_, to


def _wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


# Who gets phone and ID numbers in clear in an exported file. An export leaves the system (mail, USB
# sticks, spreadsheets): a supervisor ranks units and audits who did what, which the masked numbers
# ('+86138****8000') still tell apart; an administrator checks exported audit entries against their
# hashes, which needs the bodies exactly as hashed.
ROLES_EXPORTING_NUMBERS = frozenset({"admin"})


def masks_exports(principal: Principal) -> bool:
    return principal.role not in ROLES_EXPORTING_NUMBERS


def csv_response(rows: list[dict[str, Any]], filename: str, *, mask_numbers: bool) -> Response:
    """Rows as a CSV download; with `mask_numbers`, every phone and ID number in a text cell masked."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        if mask_numbers:
            rows = [{k: mask_sensitive_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


_REPORT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report as JSON, or as CSV with `Accept: text/csv`",
          "content": {"application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}}},
    403: {"description": "Not a supervisor key, or `unit` lies outside the key's unit"},
}


@router.get("/compliance", responses=_REPORT_ANSWERS)
async def compliance(request: Request, principal: SupervisorKey, rt: RuntimeDep,
                     unit: str | None = Query(default=None, pattern=r"^[0-9]{2,6}$"),
                     from_: AwareTime | None = Query(default=None, alias="from"), to: AwareTime | None = None,
                     basis: Literal["due", "decided"] = Query(
                         default="due",
                         description="`due` (default): tasks whose deadline falls in [from, to). `decided`: the "
                                     "console's rule, tasks whose outcome was decided in [from, to): closed in time "
                                     "then (even if due later), or breached when their deadline passed then; adds "
                                     "`open_now` (open tasks not yet due, and `at_risk`: due within the hour)")) -> Response:
    """Deadline compliance per tier (default: tasks due in [from, to), the last 7 days), in your unit.

    With `basis=decided`, the figures the console shows: a period up to now is never 0/0 while work is being done.
    """
    scope = _scope(principal, unit)
    start, end = _period(rt, from_, to)
    async with rt.sessionmaker() as session:
        if basis == "decided":
            report = await service.decided_compliance(session, unit=scope, from_=start, to=end, now=rt.clock.now())
        else:
            report = await service.compliance(session, unit=scope, from_=start, to=end)
    if _wants_csv(request):
        rows = service.compliance_rows(report)
        return csv_response(rows, f"compliance-{scope or 'all'}.csv", mask_numbers=masks_exports(principal))
    return Response(dumps(report), media_type="application/json")


@router.get("/ranking", responses=_REPORT_ANSWERS)
async def ranking(request: Request, principal: SupervisorKey, rt: RuntimeDep,
                  unit: str | None = Query(default=None, pattern=r"^[0-9]{2,6}$"),
                  from_: AwareTime | None = Query(default=None, alias="from"), to: AwareTime | None = None) -> Response:
    """Units one level below yours, worst compliance first, with the change since the period before."""
    scope = _scope(principal, unit)
    start, end = _period(rt, from_, to)
    async with rt.sessionmaker() as session:
        report = await service.ranking(session, unit=scope, from_=start, to=end)
    if _wants_csv(request):
        return csv_response(report["units"], f"ranking-{scope or 'all'}.csv",
                            mask_numbers=masks_exports(principal))
    return Response(dumps(report), media_type="application/json")


@router.get("/overview", responses={
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    403: {"description": "Not a supervisor key, or `unit` lies outside the key's unit"}})
async def overview(principal: SupervisorKey, rt: RuntimeDep,
                   unit: str | None = Query(default=None, pattern=r"^[0-9]{2,6}$"),
                   limit: int = Query(default=20, ge=1, le=200)) -> Response:
    """Open work in your unit by tier and status, and the tasks nearest to or past their deadline first."""
    scope = _scope(principal, unit)
    async with rt.sessionmaker() as session:
        report = await service.overview(session, unit=scope, now=rt.clock.now(), limit=limit)
    return Response(dumps(report), media_type="application/json")
