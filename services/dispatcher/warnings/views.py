"""Routes for warning records (thin: validation, jurisdiction, then the ingest flow)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from services.dispatcher.deps import IngestKey, RuntimeDep
from services.dispatcher.warnings.flows import IngestUnavailable, run_ingest
from services.dispatcher.warnings.schemas import (
    BatchIn,
    BatchOut,
    Rejected,
    ValidRecord,
    WarningIn,
    WarningResult,
    parse_record,
)
from services.dispatcher.warnings.service import YIELD_EVERY
from shared.sql import dumps
from shared.validation import escape_invalid, parse_json
from shared.web import FieldErrors

router = APIRouter(prefix="/v1/warnings", tags=["warnings"])
MAX_BATCH = 1000
# A record's fields are bounded (details 16 KiB encoded, the rest under 1 KiB); escaped as \uXXXX they
# may take six times as many bytes. Past these sizes a body cannot hold valid records: it is not read.
MAX_RECORD_BODY_BYTES = 128 * 1024
MAX_BATCH_BODY_BYTES = 32 * 1024 * 1024

_ERRORS = {
    401: {"description": "Missing or unknown API key"},
    403: {"description": "Not an ingest key, or the region is outside the key's unit"},
    422: {"description": "Invalid record: `errors` lists each field and the reason; nothing was stored"},
    503: {"description": "The database cannot take records just now; nothing of this request's failing"
                         " group was stored, and retrying is safe (Retry-After)"},
}


def _unavailable(exc: IngestUnavailable) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; retry shortly", headers={"Retry-After": "1"})


async def _json_body(request: Request, *, max_bytes: int) -> Any:
    """The body as JSON (`shared.validation.parse_json`), or a 422 naming the body.

    Parsed here rather than by FastAPI so that (1) the key is checked before the
    body is read (401 before 422), (2) a body nested thousands deep is a 422, not
    FastAPI's bare 400, (3) NaN or a lone surrogate in one record is refused by
    field, in that record only, and (4) a body past `max_bytes` is refused
    without being held in memory.
    """
    too_big = FieldErrors([{"field": "body", "reason": f"larger than {max_bytes} bytes"}])
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    try:
        return parse_json(b"".join(chunks))
    except ValueError as exc:
        raise FieldErrors([{"field": "body", "reason": str(exc)}]) from None


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` written in place (the OpenAPI document has no such section)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_WARNING_BODY = {"content": {"application/json": {"schema": _inline_refs(WarningIn.model_json_schema())}},
                 "required": True}


def _outside_unit(unit: str, region_code: str) -> str:
    return f"region_code {region_code} is outside this key's unit ({unit or 'nationwide'})"


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(dumps(content), status_code=status_code, media_type="application/json")


@router.post("", status_code=201, response_model=WarningResult, response_model_exclude_none=True,
             responses={200: {"description": "A replay of a record already stored: the original answer",
                              "model": WarningResult}, **_ERRORS},
             openapi_extra={"requestBody": _WARNING_BODY})
async def post_warning(request: Request, principal: IngestKey, rt: RuntimeDep) -> Response:
    """Take one warning record: 201 when new, 200 for a replay of the same (source, source_ref) from this unit.

    A record the database refuses on its own is a 422 too (field `record`); the
    records committed beside it in the same group are not affected.
    """
    record = parse_record(0, await _json_body(request, max_bytes=MAX_RECORD_BODY_BYTES), now=rt.clock.now())
    if isinstance(record, Rejected):
        raise FieldErrors(record.errors)
    if not principal.covers(record.region_code):
        raise HTTPException(status.HTTP_403_FORBIDDEN, _outside_unit(principal.unit, record.region_code))
    record.actor = principal.actor
    record.unit = principal.unit
    try:
        result = await rt.batcher.submit(record)
    except IngestUnavailable as exc:
        raise _unavailable(exc) from None
    if result["status"] == "rejected":
        raise FieldErrors(result["errors"])
    return _json(result, 201 if result["status"] == "accepted" else 200)


_BATCH_BODY = {"content": {"application/json": {"schema": BatchIn.model_json_schema(
    ref_template="#/components/schemas/{model}")}}, "required": True}


@router.post("/batch", response_model=BatchOut, response_model_exclude_none=True, responses=_ERRORS,
             openapi_extra={"requestBody": _BATCH_BODY})
async def post_batch(request: Request, principal: IngestKey, rt: RuntimeDep) -> Response:
    """Take up to 1,000 records; one result per record, in order. A bad record never blocks the others.

    The body is parsed as JSON once (`_json_body`) and each record validated on
    its own (so one bad record is reported, not fatal); the event loop gets a
    turn every 50 records, so a single urgent warning is not kept waiting behind
    a batch. A record the database refuses is split off and `rejected` alone.
    """
    body = await _json_body(request, max_bytes=MAX_BATCH_BODY_BYTES)
    if not isinstance(body, dict) or not isinstance(body.get("warnings"), list):
        raise FieldErrors([{"field": "warnings", "reason": "required: a list of warning records"}])
    extra = sorted(set(body) - {"warnings"})
    if extra:
        raise FieldErrors([{"field": escape_invalid(extra[0]), "reason": "Extra inputs are not permitted"}])
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
            parsed.unit = principal.unit
            valid.append(parsed)
    if valid:
        try:
            stored = await run_ingest(rt.sessionmaker, valid, actor=principal.actor, store=rt.store, clock=rt.clock)
        except IngestUnavailable as exc:
            raise _unavailable(exc) from None
        for index, result in stored.items():
            results[index] = result
    statuses = [r["status"] for r in results if r is not None]
    return _json({
        "results": results,
        "accepted": statuses.count("accepted"),
        "duplicates": statuses.count("duplicate"),
        "rejected": statuses.count("rejected"),
    })
