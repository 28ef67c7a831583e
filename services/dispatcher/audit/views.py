"""The dispatch log for supervisors: search it, and verify its hash chain."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from services.dispatcher.audit.service import BadFilter, check_filters
from services.dispatcher.audit.service import search as audit_search
from services.dispatcher.deps import RuntimeDep, SupervisorKey
from services.dispatcher.reports.views import masks_exports
from shared.audit.keys import Checkpoint
from shared.audit.service import verify_chain
from shared.phone import mask_sensitive_text
from shared.web import AwareTime, FieldErrors, Text

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    task_id: uuid.UUID | None
    case_id: uuid.UUID | None
    region_code: str | None
    body: dict[str, Any]
    hash: str


class IdMatchOut(BaseModel):
    kind: str
    id: uuid.UUID
    case_id: uuid.UUID


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: int | None
    id_match: IdMatchOut | None = None


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    first_bad: int | None
    reason: str | None = None


@router.get("", response_model=AuditPage, responses={
    200: {"description": "A page of entries as JSON, or as CSV with `Accept: text/csv` (the next cursor in "
                         "`X-Next-Cursor`)", "content": {"text/csv": {"schema": {"type": "string"}}}},
    403: {"description": "Not a supervisor key"},
    422: {"description": "A filter that cannot be used, named in `errors[].field`: `id` too short, malformed or "
                         "ambiguous (the reason lists the matching ids), `action` unknown, `from`/`to` not a time "
                         "with an offset or not in order"}})
async def list_audit(
    request: Request,
    principal: SupervisorKey,
    rt: RuntimeDep,
    id_prefix: Text | None = Query(
        default=None, alias="id", max_length=40,
        description="a task, case or warning id, or its first 8 or more hex digits (optionally with the tail pages "
                    "show: 0193a4f2…9c01d3); a warning's entries are its case's"),
    task_id: uuid.UUID | None = None,
    case_id: uuid.UUID | None = None,
    actor: Text | None = Query(default=None, max_length=200, description="any part of the actor, e.g. a key's name"),
    action: Text | None = Query(default=None, max_length=64,
                                description="an action (task.breached) or a family of them (task)"),
    from_: AwareTime | None = Query(default=None, alias="from"),
    to: AwareTime | None = None,
    cursor: int | None = Query(default=None, ge=0, le=2**63 - 1, description="next_cursor from the previous page"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> AuditPage | Response:
    """Entries in your unit, oldest first. Entries with no region are visible to nationwide keys only."""
    id_match = None
    async with rt.sessionmaker() as session:
        try:
            filters = await check_filters(session, unit=principal.unit, id_prefix=id_prefix, task_id=task_id,
                                          case_id=case_id, actor=actor, action=action, from_=from_, to=to)
        except BadFilter as exc:
            raise FieldErrors.one(exc.field, exc.reason) from None
        if filters.id_given and filters.entity is None:
            rows, next_cursor = [], None  # no task, case or warning in your unit has such an id
        else:
            rows, next_cursor = await audit_search(session, unit=principal.unit, task_id=filters.task_id,
                                                   case_id=filters.case_id, actor=actor, action=action, from_=from_,
                                                   to=to, cursor=cursor, limit=limit)
        if filters.entity is not None:
            id_match = IdMatchOut(kind=filters.entity.kind, id=filters.entity.id, case_id=filters.entity.case_id)
    if "text/csv" in request.headers.get("accept", ""):
        # For an admin the export keeps the body exactly as hashed, so an exported page can be checked entry
        # by entry; for a supervisor phone and ID numbers are masked (reports/views.py: who needs them).
        mask = mask_sensitive_text if masks_exports(principal) else str
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "at", "actor", "action", "task_id", "case_id", "region_code", "body", "hash"])
        writer.writerows([r.seq, r.at.isoformat(), r.actor, r.action, r.task_id or "", r.case_id or "",
                          r.region_code or "", mask(r.body), r.hash] for r in rows)
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
        if next_cursor is not None:
            headers["X-Next-Cursor"] = str(next_cursor)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    items = [AuditEntryOut(seq=r.seq, at=r.at, actor=r.actor, action=r.action, task_id=r.task_id,
                           case_id=r.case_id, region_code=r.region_code, body=orjson.loads(r.body), hash=r.hash)
             for r in rows]
    return AuditPage(items=items, next_cursor=next_cursor, id_match=id_match)


@router.get("/verify", response_model=VerifyOut)
async def verify(principal: SupervisorKey, rt: RuntimeDep,
                 checkpoint: str | None = Query(
                     default=None, max_length=300,
                     description="a checkpoint printed by `shouhu audit checkpoint` (shouhu-audit:<entries>:<hash>:"
                                 "<signature>): also find entries removed or rewritten since")) -> VerifyOut:
    """Recompute the whole keyed hash chain: `first_bad` is the first entry edited, deleted or out of place.

    With a checkpoint, a chain shorter than it (a cut tail) or different up to it
    (rewritten, even by someone holding the key) is reported too.
    """
    signed = None
    if checkpoint is not None:
        try:
            signed = Checkpoint.parse(checkpoint, rt.audit_key)
        except ValueError as exc:
            raise FieldErrors([{"field": "checkpoint", "reason": str(exc)}]) from None
    async with rt.sessionmaker() as session:
        report = await verify_chain(session, key=rt.audit_key, checkpoint=signed)
    return VerifyOut(ok=report.ok, entries=report.entries, first_bad=report.first_bad, reason=report.reason)
