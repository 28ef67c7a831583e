"""Routes for warning records (thin: validation, jurisdiction, then the ingest flow)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from services.dispatcher.deps import IngestKey, RuntimeDep
from services.dispatcher.warnings.flows import run_ingest
from shared.web import FieldErrors
from services.dispatcher.warnings.schemas import (
    BatchIn,
    BatchOut,
    Rejected,
    ValidRecord,
    WarningIn,
    WarningResult,
    parse_record,
    to_valid_record,
)

router = APIRouter(prefix="/v1/warnings", tags=["warnings"])

_ERRORS = {
    401: {"description": "Missing or unknown API key"},
    403: {"description": "Not an ingest key, or the region is outside the key's unit"},
    422: {"description": "Invalid record: `errors` lists each field and the reason; nothing was stored"},
}


def _outside_unit(unit: str, region_code: str) -> str:
    return f"region_code {region_code} is outside this key's unit ({unit or 'nationwide'})"


@router.post("", status_code=201, response_model=WarningResult, response_model_exclude_none=True,
             responses={200: {"description": "A replay of a record already stored: the original answer",
                              "model": WarningResult}, **_ERRORS})
async def post_warning(body: WarningIn, response: Response, principal: IngestKey, rt: RuntimeDep) -> WarningResult:
    """Take one warning record: 201 when new, 200 for a replay of the same (source, source_ref)."""
    record = to_valid_record(0, body, now=rt.clock.now())
    if isinstance(record, Rejected):
        raise FieldErrors(record.errors)
    if not principal.covers(record.region_code):
        raise HTTPException(status.HTTP_403_FORBIDDEN, _outside_unit(principal.unit, record.region_code))
    record.actor = principal.actor
    result = await rt.batcher.submit(record)
    response.status_code = 201 if result.status == "accepted" else 200
    return result


@router.post("/batch", response_model=BatchOut, response_model_exclude_none=True, responses=_ERRORS)
async def post_batch(body: BatchIn, principal: IngestKey, rt: RuntimeDep) -> BatchOut:
    """Take up to 1,000 records; one result per record, in order. A bad record never blocks the others."""
    now = rt.clock.now()
    results: list[WarningResult | None] = [None] * len(body.warnings)
    valid: list[ValidRecord] = []
    for index, raw in enumerate(body.warnings):
        parsed = parse_record(index, raw, now=now)
        if isinstance(parsed, Rejected):
            results[index] = WarningResult(status="rejected", errors=parsed.errors)
        elif not principal.covers(parsed.region_code):
            results[index] = WarningResult(status="rejected", errors=[
                {"field": "region_code", "reason": _outside_unit(principal.unit, parsed.region_code)}])
        else:
            valid.append(parsed)
    if valid:
        stored = await run_ingest(rt.sessionmaker, valid, actor=principal.actor, store=rt.store, clock=rt.clock)
        for index, result in stored.items():
            results[index] = result
    final = [r for r in results if r is not None]
    return BatchOut(
        results=final,
        accepted=sum(r.status == "accepted" for r in final),
        duplicates=sum(r.status == "duplicate" for r in final),
        rejected=sum(r.status == "rejected" for r in final),
    )
