"""Campaigns: segment, preview, schedule, start, cancel, report. Callers own the transaction; all writes audited.

Who is in a segment (one SQL statement, `segment_sql`, used for the preview
count *and* to materialise the recipients, so the count a supervisor saw is
computed the way the list is):

- only chats the bot can reach (its published relation
  `shared.contracts.bot.REACHABLE_CHATS`: bound and active; /stop and a 403
  "blocked" both clear it); a chat is one recipient (a person with two bound
  Telegram accounts is two chats, as for alerts);
- the citizen's region is the region of their *latest* warning (where they were
  last seen), so a citizen belongs to one unit at a time and another unit's
  citizens are never counted, even if they once had a warning here; a bound chat
  with no warning at all has no known region and is never in a segment;
- age, when a band is set, from the warnings' subject: the birth date inside an
  18-digit resident ID number (validated with its checksum at ingest) is
  preferred, whichever warning carries it; otherwise the `age` given with the
  most recent warning, plus the whole years since that warning occurred (an
  estimate, within a year). No ID number and no age: unknown, and left out;
- fraud types: at least one warning of one of them received in the last N days.

Why not a materialised "citizens" table: the data needed is already indexed
(the bot's chat bindings by active phone, cases by phone, warnings by case), the
number of bound chats is small next to the number of warnings, and a copy would
go stale.

Delivery is the bot's: `start` hands the recipients over in chunks
(`CampaignChunk` jobs); the bot keeps one delivery row per chat and the counts,
which the reports read through `shared.contracts.bot.CAMPAIGN_DELIVERY_COUNTS`,
and tells the dispatcher when a chunk is done (`CampaignProgress`), which marks
the campaign done once every recipient has a final status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.campaigns import models as m
from services.dispatcher.campaigns.schemas import (
    CampaignIn,
    CampaignOut,
    Report,
    SegmentIn,
    TemplateOut,
    compose,
    message_templates,
)
from shared import contracts
from shared.audit import service as audit
from shared.auth.service import Principal
from shared.clock import LOCAL_TZ, Clock
from shared.contracts import PRIORITY
from shared.contracts import bot as bot_contract
from shared.ids import uuid7
from shared.queue.service import ClaimedJob, enqueue
from shared.queue.worker import Handler, PermanentJobError
from shared.sql import sql
from shared.web import FieldErrors

log = structlog.get_logger(__name__)

# Priorities (shared.contracts.PRIORITY): publicity comes after every alert, and the bot delivers
# it from a worker of its own (services/bot/campaigns/delivery.py).
# Recipients per bot job. One job per recipient would be 100,000 job rows and claim transactions for a
# province-wide campaign; one job for everything would hold a lease for an hour and restart from the top
# after a crash. 50 takes a few seconds at the campaign's share of the limiter (well inside the lease),
# and between chunks the bot yields to any alert waiting.
CHUNK = 50
MAX_AHEAD = timedelta(days=30)
PAST_TOLERANCE = timedelta(minutes=5)
SYSTEM_ACTOR = "system:dispatcher"


class OutOfScope(Exception):
    """The segment reaches outside the key's unit (403: a scope rule, not a typo)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotCancellable(Exception):
    pass


# ---- the segment --------------------------------------------------------------------------------------

_AGE = (
    # The birth date in an ID number (positions 7-14) is exact; an age given with a warning ages with it.
    "CASE WHEN w.subject->>'id_number' ~ '^[0-9]{17}[0-9X]$'"
    " THEN CAST(date_part('year', age(CAST(:today AS date),"
    "   to_date(substr(w.subject->>'id_number', 7, 8), 'YYYYMMDD'))) AS int)"
    " ELSE CAST(w.subject->>'age' AS int) + CAST(date_part('year', age(CAST(:today AS date),"
    "   CAST(w.occurred_at AT TIME ZONE CAST(:tz AS text) AS date))) AS int) END"
)


def segment_sql(segment: dict[str, Any]) -> str:
    """SELECT chat_id, lang of the bound, active chats a (validated) segment matches.

    Built from fixed fragments: only which conditions are present varies, never text from the
    request (the values are bound parameters), and absent conditions cost nothing in the plan.
    """
    parts = [
        f"SELECT b.chat_id, b.lang FROM {bot_contract.REACHABLE_CHATS} AS b",
        "CROSS JOIN LATERAL (SELECT w.region_code FROM cases k JOIN warnings w ON w.case_id = k.id"
        " WHERE k.phone = b.phone ORDER BY w.received_at DESC, w.id DESC LIMIT 1) AS home",
    ]
    where = ["home.region_code LIKE :prefix"]
    if segment.get("age_min") is not None or segment.get("age_max") is not None:
        parts.append(
            f"LEFT JOIN LATERAL (SELECT {_AGE} AS age FROM cases k JOIN warnings w ON w.case_id = k.id"
            " WHERE k.phone = b.phone AND (w.subject->>'id_number' IS NOT NULL OR w.subject->>'age' IS NOT NULL)"
            " ORDER BY (w.subject->>'id_number' ~ '^[0-9]{17}[0-9X]$') DESC, w.received_at DESC, w.id DESC"
            " LIMIT 1) AS born ON true")
        # NULL (unknown age) compares to nothing, so it is left out whenever a band is set.
        if segment.get("age_min") is not None:
            where.append("born.age >= CAST(:age_min AS int)")
        if segment.get("age_max") is not None:
            where.append("born.age <= CAST(:age_max AS int)")
    if segment.get("fraud_types"):
        where.append(
            "EXISTS (SELECT 1 FROM cases k JOIN warnings w ON w.case_id = k.id WHERE k.phone = b.phone"
            " AND w.fraud_type = ANY(CAST(:types AS text[])) AND w.received_at >= :since)")
    return " ".join(parts) + " WHERE " + " AND ".join(where)


def segment_params(segment: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {"prefix": segment["region_prefix"] + "%"}
    if segment.get("age_min") is not None or segment.get("age_max") is not None:
        params["today"] = now.astimezone(LOCAL_TZ).date()
        params["tz"] = LOCAL_TZ.key
        if segment.get("age_min") is not None:
            params["age_min"] = segment["age_min"]
        if segment.get("age_max") is not None:
            params["age_max"] = segment["age_max"]
    if segment.get("fraud_types"):
        params["types"] = list(segment["fraud_types"])
        params["since"] = now - timedelta(days=int(segment["days"]))
    return params


def scoped_segment(segment: SegmentIn, *, unit: str) -> dict[str, Any]:
    """The segment as stored: the region defaults to the key's unit and must lie inside it."""
    prefix = segment.region_prefix if segment.region_prefix is not None else unit
    if not prefix.startswith(unit):
        raise OutOfScope("segment.region_prefix",
                         f"{prefix or '(all regions)'} is outside your unit {unit}; use a prefix starting with {unit}")
    return {"region_prefix": prefix, "age_min": segment.age_min, "age_max": segment.age_max,
            "fraud_types": list(segment.fraud_types), "days": segment.days}


async def preview_count(session: AsyncSession, segment: dict[str, Any], *, now: datetime) -> int:
    return int((await session.execute(sql(f"SELECT count(*) FROM ({segment_sql(segment)}) AS s"),
                                      segment_params(segment, now=now))).scalar_one())


# ---- messages -------------------------------------------------------------------------------------------

def templates() -> list[TemplateOut]:
    data = message_templates()["templates"]
    return [TemplateOut(key=key, title=entry["title"], texts={lang: compose(entry[lang], lang) for lang in ("zh", "en")})
            for key, entry in data.items()]


def message_texts(data: CampaignIn) -> dict[str, str]:
    """The exact text per recipient language: a template in both, an own text (one language) for everyone."""
    if data.template:
        entry = message_templates()["templates"][data.template]
        return {lang: compose(entry[lang], lang) for lang in ("zh", "en")}
    assert data.text is not None  # CampaignIn guarantees a template or a text
    text = compose(data.text, data.lang)
    return {"zh": text, "en": text}


# ---- create, read, cancel --------------------------------------------------------------------------------

_CAMPAIGN = ("id, unit, name, segment, region_prefix, template, lang, texts, status, send_at, created_by,"
             " created_at, preview_count, started_at, finished_at, cancelled_at, total")
# A campaign with the bot's delivery counts (zero until the bot has sent to anyone).
_COLUMNS = (", ".join(f"c.{column.strip()}" for column in _CAMPAIGN.split(","))
            + ", COALESCE(k.sent, 0) AS sent, COALESCE(k.failed, 0) AS failed, COALESCE(k.blocked, 0) AS blocked,"
            " COALESCE(k.uncertain, 0) AS uncertain")
_FROM = f"campaigns c LEFT JOIN {bot_contract.CAMPAIGN_DELIVERY_COUNTS} AS k ON k.campaign_id = c.id"


@dataclass
class Created:
    campaign: Any
    new: bool


async def create(session: AsyncSession, principal: Principal, data: CampaignIn, *, now: datetime) -> Created:
    """Validate against the key's unit and the clock, store, queue its start job, audit. Replays return the first."""
    if data.client_ref:
        existing = (await session.execute(
            sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE c.created_by = :by AND c.client_ref = :ref"),
            {"by": principal.actor, "ref": data.client_ref})).first()
        if existing is not None:
            return Created(existing, new=False)
    segment = scoped_segment(data.segment, unit=principal.unit)
    send_at = data.send_at or now
    if send_at.tzinfo is None:
        send_at = send_at.replace(tzinfo=LOCAL_TZ)
    if send_at < now - PAST_TOLERANCE:
        raise FieldErrors([{"field": "send_at", "reason": "is in the past; leave it empty to send now"}])
    if send_at > now + MAX_AHEAD:
        raise FieldErrors([{"field": "send_at", "reason": f"must be within {MAX_AHEAD.days} days"}])
    send_at = max(send_at, now)
    count = await preview_count(session, segment, now=now)
    campaign_id = uuid7()
    row = (await session.execute(
        sql("INSERT INTO campaigns (id, unit, name, segment, region_prefix, template, lang, texts, status, send_at,"
            " created_by, created_at, client_ref, preview_count)"
            " VALUES (:id, :unit, :name, CAST(:segment AS jsonb), :prefix, :template, :lang, CAST(:texts AS jsonb),"
            " :status, :send_at, :by, :now, :ref, :count)"
            " ON CONFLICT ON CONSTRAINT uq_campaigns_client_ref DO NOTHING"
            f" RETURNING {_CAMPAIGN}, 0 AS sent, 0 AS failed, 0 AS blocked, 0 AS uncertain"),
        {"id": campaign_id, "unit": principal.unit, "name": data.name, "segment": _json(segment),
         "prefix": segment["region_prefix"], "template": data.template,
         "lang": None if data.template else data.lang, "texts": _json(message_texts(data)), "status": m.SCHEDULED,
         "send_at": send_at, "by": principal.actor, "now": now, "ref": data.client_ref, "count": count})).first()
    if row is None:  # the same ref committed by a concurrent request a moment ago
        existing = (await session.execute(
            sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE c.created_by = :by AND c.client_ref = :ref"),
            {"by": principal.actor, "ref": data.client_ref})).one()
        return Created(existing, new=False)
    await enqueue(session, [contracts.CampaignStart(campaign_id=campaign_id).job(
        run_at=send_at, priority=PRIORITY["campaign_start"], dedupe_key=f"campaign:start:{campaign_id}")], now=now)
    audit.record(session, at=now, actor=principal.actor, action="campaign.scheduled",
                 region_code=segment["region_prefix"] or None, campaign_id=str(campaign_id), name=data.name,
                 segment=segment, template=data.template, own_text=data.text, send_at=send_at, preview_count=count)
    log.info("campaign.scheduled", campaign_id=str(campaign_id), preview_count=count)
    return Created(row, new=True)


# A campaign is visible to a key whose unit contains the campaign's whole target region.
_VISIBLE = "c.region_prefix LIKE :unit"


async def get(session: AsyncSession, campaign_id: uuid.UUID, *, unit: str) -> Any | None:
    """The campaign if it targets inside `unit`; None otherwise (another unit's campaign does not exist for you)."""
    return (await session.execute(
        sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE c.id = :id AND {_VISIBLE}"),
        {"id": campaign_id, "unit": unit + "%"})).first()


async def list_campaigns(session: AsyncSession, *, unit: str, limit: int = 100,
                         status: str | None = None) -> list[Any]:
    status_filter = "AND c.status = :status" if status else ""
    return list((await session.execute(
        sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE {_VISIBLE} {status_filter}"
            " ORDER BY c.created_at DESC, c.id DESC LIMIT :n"),
        {"unit": unit + "%", "status": status, "n": limit})).all())


async def cancel(session: AsyncSession, principal: Principal, campaign_id: uuid.UUID, *, now: datetime) -> Any | None:
    """Stop a scheduled or sending campaign: the bot sends no further chunk (messages in flight finish)."""
    found = (await session.execute(
        sql(f"SELECT c.status FROM campaigns c WHERE c.id = :id AND {_VISIBLE} FOR UPDATE"),
        {"id": campaign_id, "unit": principal.unit + "%"})).first()
    if found is None:
        return None
    if found.status not in m.LIVE:
        raise NotCancellable(f"the campaign is {found.status}")
    await session.execute(
        sql("UPDATE campaigns SET status = :s, cancelled_at = :now, cancelled_by = :by, finished_at = :now"
            " WHERE id = :id"), {"id": campaign_id, "s": m.CANCELLED, "now": now, "by": principal.actor})
    row = (await session.execute(sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE c.id = :id"), {"id": campaign_id})).one()
    not_sent = max(0, (row.total if row.started_at else row.preview_count)
                   - (row.sent + row.failed + row.blocked + row.uncertain))
    audit.record(session, at=now, actor=principal.actor, action="campaign.cancelled",
                 region_code=row.region_prefix or None, campaign_id=str(campaign_id), not_sent=not_sent,
                 sent=row.sent)
    return row


# ---- start (the dispatcher's job at send_at) ------------------------------------------------------------

async def start(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> None:
    """Pick the recipients once and hand them to the bot in chunks, in one transaction with the job's removal.

    Runs once in effect: the row lock and the status check stop a second start, and the bot's
    delivery rows (one per campaign and chat) keep a chat from getting it twice should one slip through.
    """
    row = (await session.execute(sql("SELECT status, segment, region_prefix, texts FROM campaigns WHERE id = :id"
                                     " FOR UPDATE"), {"id": campaign_id})).first()
    if row is None:
        raise PermanentJobError(f"no campaign {campaign_id}")
    if row.status != m.SCHEDULED:
        log.info("campaign.start_skipped", campaign_id=str(campaign_id), status=row.status)
        return
    recipients = (await session.execute(
        sql(f"SELECT DISTINCT ON (s.chat_id) s.chat_id, s.lang FROM ({segment_sql(row.segment)}) AS s"
            " ORDER BY s.chat_id"), segment_params(row.segment, now=now))).all()
    total = len(recipients)
    jobs = [contracts.CampaignChunk(
        campaign_id=campaign_id, texts=row.texts,
        recipients=[contracts.CampaignRecipient(chat_id=r.chat_id, lang=r.lang) for r in recipients[i:i + CHUNK]],
    ).job(run_at=now, priority=PRIORITY["campaign_send"], dedupe_key=f"campaign:{campaign_id}:{recipients[i].chat_id}")
        for i in range(0, total, CHUNK)]
    await enqueue(session, jobs, now=now)
    done = total == 0
    await session.execute(
        sql("UPDATE campaigns SET status = :s, total = :total, started_at = :now,"
            " finished_at = :finished WHERE id = :id"),
        {"id": campaign_id, "s": m.DONE if done else m.SENDING, "total": total, "now": now,
         "finished": now if done else None})
    audit.record(session, at=now, actor=SYSTEM_ACTOR, action="campaign.started", region_code=row.region_prefix or None,
                 campaign_id=str(campaign_id), recipients=total, jobs=len(jobs))
    log.info("campaign.started", campaign_id=str(campaign_id), recipients=total, jobs=len(jobs))


async def check_progress(session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime) -> bool:
    """Mark a sending campaign done (audited) once the bot has a final status for every recipient."""
    row = (await session.execute(sql(f"SELECT {_COLUMNS} FROM {_FROM} WHERE c.id = :id FOR UPDATE OF c"),
                                 {"id": campaign_id})).first()
    if row is None or row.status != m.SENDING:
        return False
    if row.sent + row.failed + row.blocked + row.uncertain < row.total:
        return False
    await session.execute(sql("UPDATE campaigns SET status = :s, finished_at = :now WHERE id = :id"),
                          {"id": campaign_id, "s": m.DONE, "now": now})
    audit.record(session, at=now, actor="system:bot", action="campaign.finished",
                 region_code=row.region_prefix or None, campaign_id=str(campaign_id), total=row.total,
                 sent=row.sent, failed=row.failed, blocked=row.blocked, uncertain=row.uncertain)
    return True


# ---- report ----------------------------------------------------------------------------------------------

def report_of(row: Any, errors: list[dict[str, Any]] | None = None) -> Report:
    done = row.sent + row.failed + row.blocked + row.uncertain
    if row.status == m.CANCELLED:
        pending = 0
    else:
        pending = max(0, (row.total if row.started_at else row.preview_count) - done)
    progress = 1.0 if row.status == m.DONE else (round(done / row.total, 4) if row.total else 0.0)
    return Report(total=row.total, sent=row.sent, failed=row.failed, blocked=row.blocked, uncertain=row.uncertain,
                  pending=pending, progress=min(progress, 1.0), errors=errors or [])


async def errors_of(session: AsyncSession, campaign_id: uuid.UUID, *, limit: int = 5) -> list[dict[str, Any]]:
    rows = await bot_contract.campaign_errors(session, campaign_id, limit=limit)
    return [{"status": r.status, "error": r.error, "count": r.count} for r in rows]


def out(row: Any, errors: list[dict[str, Any]] | None = None) -> CampaignOut:
    return CampaignOut(
        campaign_id=row.id, name=row.name, unit=row.unit, status=row.status, segment=row.segment,
        template=row.template, lang=row.lang, texts=row.texts, send_at=row.send_at, created_by=row.created_by,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        cancelled_at=row.cancelled_at, preview_count=row.preview_count, report=report_of(row, errors))


def _json(value: Any) -> str:
    from shared.sql import dumps

    return dumps(value).decode()


def job_handlers(*, clock: Clock) -> dict[str, Handler]:
    """The dispatcher worker's campaign jobs (registered in services/dispatcher/jobs.py)."""

    async def on_start(session: AsyncSession, job: ClaimedJob) -> None:
        await start(session, contracts.CampaignStart.of(job).campaign_id, now=clock.now())

    async def on_progress(session: AsyncSession, job: ClaimedJob) -> None:
        await check_progress(session, contracts.CampaignProgress.of(job).campaign_id, now=clock.now())

    return {contracts.CampaignStart.KIND: Handler(on_start), contracts.CampaignProgress.KIND: Handler(on_progress)}
