"""Routes for warning records (thin: validation, jurisdiction, then the ingest flow)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status

from services.dispatcher.deps import IngestKey, RuntimeDep
from services.dispatcher.warnings.flows import run_ingest
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
from services.dispatcher.warnings.service import YIELD_EVERY
from shared.sql import dumps
from shared.web import FieldErrors

router = APIRouter(prefix="/v1/warnings", tags=["warnings"])
MAX_BATCH = 1000

_ERRORS = {
    401: {"description": "Missing or unknown API key"},
    403: {"description": "Not an ingest key, or the region is outside the key's unit"},
    422: {"description": "Invalid record: `errors` lists each field and the reason; nothing was stored"},
}


def _outside_unit(unit: str, region_code: str) -> str:
    return f"region_code {region_code} is outside this key's unit ({unit or 'nationwide'})"


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(dumps(content), status_code=status_code, media_type="application/json")


@router.post("", status_code=201, response_model=WarningResult, response_model_exclude_none=True,
             responses={200: {"description": "A replay of a record already stored: the original answer",
                              "model": WarningResult}, **_ERRORS})
async def post_warning(body: WarningIn, principal: IngestKey, rt: RuntimeDep) -> Response:
    """Take one warning record: 201 when new, 200 for a replay of the same (source, source_ref)."""
    record = to_valid_record(0, body, now=rt.clock.now())
    if isinstance(record, Rejected):
        raise FieldErrors(record.errors)
    if not principal.covers(record.region_code):
        raise HTTPException(status.HTTP_403_FORBIDDEN, _outside_unit(principal.unit, record.region_code))
    record.actor = principal.actor
    result = await rt.batcher.submit(record)
    return _json(result, 201 if result["status"] == "accepted" else 200)


_BATCH_BODY = {"content": {"application/json": {"schema": BatchIn.model_json_schema(
    ref_template="#/components/schemas/{model}")}}, "required": True}


@router.post("/batch", response_model=BatchOut, response_model_exclude_none=True, responses=_ERRORS,
             openapi_extra={"requestBody": _BATCH_BODY})
async def post_batch(request: Request, principal: IngestKey, rt: RuntimeDep) -> Response:
    """Take up to 1,000 records; one result per record, in order. A bad record never blocks the others.

    The body is parsed with orjson and each record validated on its own (so one
    bad record is reported, not fatal); the event loop gets a turn every 100
    records, so a single urgent warning is not kept waiting behind a batch.
    """
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise FieldErrors([{"field": "body", "reason": f"not valid JSON ({exc})"}]) from None
    if not isinstance(body, dict) or not isinstance(body.get("warnings"), list):
        raise FieldErrors([{"field": "warnings", "reason": "required: a list of warning records"}])
    extra = sorted(set(body) - {"warnings"})
    if extra:
        raise FieldErrors([{"field": extra[0], "reason": "Extra inputs are not permitted"}])
    raw_records: list[Any] = body["warnings"]
    if len(raw_records) > MAX_BATCH:
        raise FieldErrors([{"field": "warnings", "reason": f"at most {MAX_BATCH} records per batch"}])
    now = rt.clock.now()
    results: list[dict[str, Any] | None] = [None] * len(raw_records)
    valid: list[ValidRecord] = []
    for index, raw in enumerate(raw_records):
        if index and index % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        parsed = parse_record(index, raw, now=now)
        if isinstance(parsed, Rejected):
            results[index] = {"status": "rejected", "errors": parsed.errors}
        elif not principal.covers(parsed.region_code):
            results[index] = {"status": "rejected", "errors": [
                {"field": "region_code", "reason": _outside_unit(principal.unit, parsed.region_code)}]}
        else:
            valid.append(parsed)
    if valid:
        stored = await run_ingest(rt.sessionmaker, valid, actor=principal.actor, store=rt.store, clock=rt.clock)
        for index, result in stored.items():
            results[index] = result
    statuses = [r["status"] for r in results if r is not None]
    return _json({
        "results": results,
        "accepted": statuses.count("accepted"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
    })
