"""Ingest: deduplicate warnings, merge them into cases, grade them, and open or raise persuasion tasks.

One call handles a whole batch in the caller's transaction with a fixed number
of statements (a few SELECTs, then one INSERT or UPDATE per table), so a batch
of 1,000 costs about what a batch of 10 does in round trips.

Concurrency, in the database rather than in Python:
- `(source, source_ref)` is unique per unit of the sending key: a replay racing
  its original loses the INSERT, and the batch is retried (it then answers "duplicate").
- One open case per phone (partial unique index): two warnings for one person
  at the same moment cannot open two cases; the loser retries and merges.
- Open cases are locked in phone order, so two batches never deadlock.

Units: one open case per person, whoever sends the warning, so the citizen never
has two teams calling. A key sees only its unit's cases, so when a warning joins
a case its key's unit does not cover, the answer carries only the warning's own
id (`schemas.WarningResult` documents it) and the owning unit's task records a
"warning.joined_from_other_unit" event instead of the usual "warning.merged".
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatcher.policy.schemas import TIER_ORDER
from services.dispatcher.policy.service import LoadedPolicy, PolicyStore, Reason
from services.dispatcher.tasks import plans
from services.dispatcher.tasks.service import recheck_visit_claims, sync_operator_jobs
from services.dispatcher.warnings.schemas import OTHER_UNIT_NOTICE, ValidRecord
from shared.audit import service as audit
from shared.contracts import OperatorCall
from shared.contracts import bot as bot_contract
from shared.ids import uuid7
from shared.queue.service import NewJob, enqueue
from shared.sql import dumps, recordset, sql

# A 1,000-record batch is ~100 ms of Python. Yielding to the event loop every
# this many records lets a single high-tier warning arriving meanwhile be
# handled in between, instead of waiting for the whole batch.
YIELD_EVERY = 50


class RetryBatch(Exception):
    """A concurrent writer got there first (same record, or same person's case): run the batch again."""


@dataclass(slots=True)
class _Graded:
    record: ValidRecord
    warning_id: uuid.UUID
    tier: str
    reasons: list[Reason]
    reason_dicts: list[dict[str, str]] | None = None  # as stored and answered (made once, in _write)


@dataclass(slots=True)
class _CaseWork:
    """Everything this batch does to one person's case."""

    phone: str
    is_new: bool
    state: plans.PlanState
    policy_version: str
    warning_count: int
    first_warning_at: datetime
    last_warning_at: datetime
    tier_before: str | None
    graded: list[_Graded] = field(default_factory=list)
    raised: bool = False
    notes: list[str] = field(default_factory=list)


# The idempotency key: (unit of the sending key, source, source_ref).
Key = tuple[str, str, str]


async def _existing_warnings(session: AsyncSession, keys: list[Key]) -> dict[Key, Any]:
    if not keys:
        return {}
    rows = (
        await session.execute(
            sql(
                "SELECT w.ingest_unit, w.source, w.source_ref, w.id, w.case_id, w.task_id, w.tier, w.due_at,"
                " w.reasons, w.merged, w.notices, t.region_code AS task_region"
                " FROM warnings w JOIN json_to_recordset(CAST(:keys AS json)) AS k(u text, s text, r text)"
                " ON w.source = k.s AND w.source_ref = k.r AND w.ingest_unit = k.u"
                " JOIN tasks t ON t.id = w.task_id"
            ),
            # JSON, not three text[]: asyncpg encodes array elements one by one (~1 ms of Python per 1,000).
            {"keys": recordset({"u": k[0], "s": k[1], "r": k[2]} for k in keys)},
        )
    ).all()
    return {(row.ingest_unit, row.source, row.source_ref): row for row in rows}


async def _lock_open_cases(session: AsyncSession, phones: list[str]) -> list[Any]:
    if not phones:
        return []
    return (
        await session.execute(
            sql(
                "SELECT c.id AS case_id, c.phone, c.warning_count, c.first_warning_at, t.id AS task_id, t.tier,"
                " t.due_at, t.plan_started_at, t.plan_seq, t.steps_done, t.attempts, t.has_chat, t.policy_version,"
                " t.region_code, t.fraud_type"
                " FROM cases c JOIN tasks t ON t.case_id = c.id"
                " WHERE c.phone = ANY(ARRAY(SELECT json_array_elements_text(CAST(:phones AS json))))"
                " AND c.status = 'open' ORDER BY c.phone FOR UPDATE OF c, t"
            ),
            {"phones": dumps(phones).decode()},
        )
    ).all()


def handled_elsewhere(status: str, warning_id: uuid.UUID, notices: list[str]) -> dict[str, Any]:
    """The answer for a warning that joined another unit's case: its own id, nothing of that unit's."""
    return {"status": status, "warning_id": warning_id, "merged": True, "handled_elsewhere": True,
            "warnings": [*notices, OTHER_UNIT_NOTICE]}


def _duplicate_result(row: Any, *, unit: str) -> dict[str, Any]:
    # Visibility is decided again at each replay: the key's unit against the task's region now.
    if not row.task_region.startswith(unit):
        return handled_elsewhere("duplicate", row.id, row.notices or [])
    return {"status": "duplicate", "warning_id": row.id, "case_id": row.case_id, "task_id": row.task_id,
            "tier": row.tier, "due_at": row.due_at, "reasons": row.reasons, "merged": row.merged,
            "warnings": row.notices or []}


async def ingest_batch(session: AsyncSession, records: list[ValidRecord], *, actor: str, store: PolicyStore,
                       now: datetime) -> dict[int, dict[str, Any]]:
    """Store valid records and their consequences; return each record's answer (a WarningResult dict) by index.

    Answers are plain dicts, not pydantic models: building 1,000 models per batch
    cost a tenth of the ingest CPU. `WarningResult` documents their shape.
    """
    policy = store.current
    results: dict[int, dict[str, Any]] = {}

    # 1. Duplicates: within this batch, then against what is stored.
    first_index: dict[Key, int] = {}
    repeats: list[tuple[int, Key]] = []
    fresh: list[ValidRecord] = []
    for rec in records:
        key = (rec.unit, rec.source, rec.source_ref)
        if key in first_index:
            repeats.append((rec.index, key))
        else:
            first_index[key] = rec.index
            fresh.append(rec)
    stored = await _existing_warnings(session, list(first_index))
    new_records = []
    for rec in fresh:
        row = stored.get((rec.unit, rec.source, rec.source_ref))
        if row is not None:
            results[rec.index] = _duplicate_result(row, unit=rec.unit)
        else:
            new_records.append(rec)

    # 2. Lock the open cases of everyone concerned; note who has a bound chat.
    phones = sorted({rec.phone for rec in new_records})
    works: dict[str, _CaseWork] = {}
    for row in await _lock_open_cases(session, phones):
        works[row.phone] = _CaseWork(
            phone=row.phone, is_new=False, policy_version=row.policy_version, warning_count=row.warning_count,
            first_warning_at=row.first_warning_at, last_warning_at=now, tier_before=row.tier,
            state=plans.PlanState(
                task_id=row.task_id, case_id=row.case_id, phone=row.phone, region_code=row.region_code,
                fraud_type=row.fraud_type, tier=row.tier, plan_started_at=row.plan_started_at,
                plan_seq=row.plan_seq, due_at=row.due_at, has_chat=row.has_chat,
                steps_done=list(row.steps_done or []), attempts=dict(row.attempts or {})),
        )
    bound = await bot_contract.bound_phones(session, [p for p in phones if p not in works])

    # 3. Grade each warning in order, against its case as it stands so far.
    for position, rec in enumerate(new_records):
        if position and position % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let small requests in between (see YIELD_EVERY)
        work = works.get(rec.phone)
        count = (work.warning_count if work else 0) + 1
        rec.case_warnings = count
        tier, reasons = policy.grade(rec)  # a ValidRecord has every attribute GradeInput has
        graded = _Graded(rec, uuid7(), tier, reasons)
        if work is None:
            deadline = timedelta(minutes=policy.playbook(tier).deadline_minutes)
            work = works[rec.phone] = _CaseWork(
                phone=rec.phone, is_new=True, policy_version=policy.version, warning_count=0,
                first_warning_at=rec.occurred_at, last_warning_at=now, tier_before=None,
                state=plans.PlanState(task_id=uuid7(), case_id=uuid7(), phone=rec.phone,
                                      region_code=rec.region_code, fraud_type=rec.fraud_type, tier=tier,
                                      plan_started_at=now, plan_seq=1, due_at=now + deadline,
                                      has_chat=rec.phone in bound))
        elif TIER_ORDER[tier] > TIER_ORDER[work.state.tier]:
            reasons.append(Reason("case_raised", f"{work.state.tier} -> {tier}",
                                  "grades higher than the open case: tier raised, deadline pulled in"))
            if work.is_new:
                work.state.tier = tier
                work.state.due_at = min(work.state.due_at,
                                        now + timedelta(minutes=policy.playbook(tier).deadline_minutes))
            else:
                work.state.tier = tier
                work.raised = True
        elif tier != work.state.tier:
            reasons.append(Reason("open_case", work.state.tier, f"joined an open case graded {work.state.tier}"))
        work.warning_count = count
        work.first_warning_at = min(work.first_warning_at, rec.occurred_at)
        work.graded.append(graded)

    # 4. Plans: a new task starts its tier's plan; a raised task starts the new tier's plan now.
    jobs: list[NewJob] = []
    for work in works.values():
        if not work.graded:
            continue
        if work.is_new:
            new_jobs, work.notes = plans.start_plan(policy, work.state, now=now)
            jobs += new_jobs
        elif work.raised:
            task_policy: LoadedPolicy = await store.get(session, work.policy_version)
            new_tier = work.state.tier
            work.state.tier = work.tier_before or new_tier
            plans.replan(task_policy, work.state, new_tier=new_tier, now=now)
            new_jobs, work.notes = plans.start_plan(task_policy, work.state, now=now)
            jobs += new_jobs

    await _write(session, works, jobs, actor=actor, now=now)

    # 5. Answers and audit entries.
    done = 0
    for work in works.values():
        done += len(work.graded)
        if done >= YIELD_EVERY:
            done = 0
            await asyncio.sleep(0)
        for position, g in enumerate(work.graded):
            rec = g.record
            merged = not (work.is_new and position == 0)
            raised_here = work.raised and position == len(work.graded) - 1
            if not work.state.region_code.startswith(rec.unit):
                # Another unit's case: answer with this warning's id only; tell the owning unit who joined.
                results[rec.index] = handled_elsewhere("accepted", g.warning_id, rec.notices)
                joined: dict[str, Any] = {"from_unit": rec.unit, "source": rec.source,
                                          "task_tier": work.state.tier, "due_at": work.state.due_at}
                if raised_here:
                    joined["before"] = {"tier": work.tier_before}
                    joined["after"] = {"tier": work.state.tier, "due_at": work.state.due_at}
                    joined["notes"] = work.notes
                audit.record(session, at=now, actor=f"unit:{rec.unit}", action="warning.joined_from_other_unit",
                             task_id=work.state.task_id, case_id=work.state.case_id,
                             region_code=work.state.region_code, **joined)
                continue
            reasons = g.reason_dicts
            results[rec.index] = {
                "status": "accepted", "warning_id": g.warning_id, "case_id": work.state.case_id,
                "task_id": work.state.task_id, "tier": work.state.tier, "due_at": work.state.due_at,
                "reasons": reasons, "merged": merged, "warnings": rec.notices}
            body: dict[str, Any] = {
                "warning_id": g.warning_id, "source": rec.source, "source_ref": rec.source_ref,
                "signal": rec.signal, "fraud_type": rec.fraud_type, "warning_tier": g.tier,
                "reasons": reasons, "task_tier": work.state.tier,
                "due_at": work.state.due_at, "policy_version": work.policy_version,
            }
            if not merged:
                body["channels_started"] = sorted(k for k in work.state.attempts if k != "seen")
                body["notes"] = work.notes
                action = "task.created"
            else:
                action = "warning.merged"
                if raised_here:
                    body["before"] = {"tier": work.tier_before}
                    body["after"] = {"tier": work.state.tier, "due_at": work.state.due_at}
                    body["notes"] = work.notes
            audit.record(session, at=now, actor=rec.actor or actor, action=action, task_id=work.state.task_id,
                         case_id=work.state.case_id, region_code=work.state.region_code, **body)

    for index, key in repeats:
        first = results[first_index[key]]
        results[index] = {**first, "status": "duplicate"}
    return results


# New cases, their tasks and every warning of the batch in one statement (one round trip instead of
# three; single-record ingest is bound by round trips under group commit). The data-modifying CTEs share
# one snapshot, and foreign keys are checked at the end of the statement, when the new cases and tasks
# exist. A case another transaction opened first is not inserted (ON CONFLICT), so neither are its task
# and its new warnings (the joins below): the counts tell, and the batch is retried (RetryBatch). The
# same for a warning a concurrent request stored first.
_INSERT_CASES_TASKS_WARNINGS = (
    "WITH nc AS (SELECT * FROM jsonb_to_recordset(CAST(:cases AS jsonb))"
    " AS r(id uuid, task_id uuid, phone text, tier text, region_code text, n int, first_at timestamptz,"
    " fraud_type text, policy_version text, steps_done text[], due_at timestamptz, has_chat boolean,"
    " attempts jsonb)),"
    " c AS (INSERT INTO cases (id, phone, status, tier, region_code, warning_count, first_warning_at,"
    " last_warning_at, created_at)"
    " SELECT id, phone, 'open', tier, region_code, n, first_at, CAST(:now AS timestamptz), CAST(:now AS timestamptz)"
    " FROM nc ORDER BY phone"
    " ON CONFLICT (phone) WHERE status = 'open' DO NOTHING RETURNING id),"
    " t AS (INSERT INTO tasks (id, case_id, phone, region_code, fraud_type, tier, status, policy_version,"
    " created_at, plan_started_at, plan_seq, steps_done, due_at, has_chat, attempts)"
    " SELECT nc.task_id, nc.id, nc.phone, nc.region_code, nc.fraud_type, nc.tier, 'open', nc.policy_version,"
    " CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1, nc.steps_done, nc.due_at, nc.has_chat, nc.attempts"
    " FROM nc JOIN c ON c.id = nc.id RETURNING 1),"
    " w AS (INSERT INTO warnings (id, source, source_ref, received_at, occurred_at, phone, fraud_type, signal,"
    " region_code, amount_at_risk, risk_score, subject, details, case_id, task_id, tier, due_at,"
    " reasons, merged, notices, ingested_by, ingest_unit)"
    " SELECT r.id, r.source, r.source_ref, CAST(:now AS timestamptz), r.occurred_at, r.phone, r.fraud_type,"
    " r.signal, r.region_code, r.amount_at_risk, r.risk_score, r.subject, r.details, r.case_id, r.task_id, r.tier,"
    " r.due_at, r.reasons, r.merged, r.notices, r.ingested_by, r.ingest_unit"
    " FROM jsonb_to_recordset(CAST(:warnings AS jsonb)) AS r(id uuid, source text, source_ref text,"
    " occurred_at timestamptz, phone text, fraud_type text, signal text, region_code text,"
    " amount_at_risk numeric, risk_score smallint, subject jsonb, details jsonb, case_id uuid,"
    " task_id uuid, tier text, due_at timestamptz, reasons jsonb, merged boolean, notices jsonb,"
    " ingested_by text, ingest_unit text, new_case boolean)"
    " WHERE NOT r.new_case OR r.case_id IN (SELECT id FROM c)"
    " ON CONFLICT (source, source_ref, ingest_unit) DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM c) AS cases, (SELECT count(*) FROM t) AS tasks,"
    " (SELECT count(*) FROM w) AS warnings"
)


def _keep_one_operator_call(state: plans.PlanState, jobs: list[NewJob]) -> None:
    """A raised task that already has a live operator call (queued, or held by a seat) gets no second one from
    its new plan: two would let two seats call the same citizen at once. Its attempt counter goes back."""
    for job in [j for j in jobs if j.kind == OperatorCall.KIND and j.task_id == state.task_id]:
        jobs.remove(job)
        state.attempts["operator_call"] = int(job.payload["attempt"]) - 1


async def _write(session: AsyncSession, works: dict[str, _CaseWork], jobs: list[NewJob], *, actor: str,
                 now: datetime) -> None:
    new_cases = sorted((w for w in works.values() if w.is_new and w.graded), key=lambda w: w.phone)
    old_cases = [w for w in works.values() if not w.is_new and w.graded]

    if old_cases:
        await session.execute(
            sql(
                "UPDATE cases c SET warning_count = r.n, last_warning_at = CAST(:now AS timestamptz), tier = r.tier"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id uuid, n int, tier text) WHERE c.id = r.id"
            ),
            {"rows": recordset({"id": w.state.case_id, "n": w.warning_count, "tier": w.state.tier}
                               for w in old_cases), "now": now},
        )
        raised = [w for w in old_cases if w.raised]
        for w in raised:  # rare: a waiting operator call moves up with its task, and stays its only one
            if await sync_operator_jobs(session, task_id=w.state.task_id, tier=w.state.tier, due_at=w.state.due_at):
                _keep_one_operator_call(w.state, jobs)
            await recheck_visit_claims(session, task_id=w.state.task_id, now=now)
        if raised:
            await session.execute(
                sql(
                    "UPDATE tasks t SET tier = r.tier, due_at = r.due_at, plan_started_at = CAST(:now AS timestamptz),"
                    " plan_seq = r.plan_seq, steps_done = r.steps_done, attempts = r.attempts"
                    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id uuid, tier text, due_at timestamptz,"
                    " plan_seq int, steps_done text[], attempts jsonb) WHERE t.id = r.id"
                ),
                {"rows": recordset({"id": w.state.task_id, "tier": w.state.tier, "due_at": w.state.due_at,
                                    "plan_seq": w.state.plan_seq, "steps_done": w.state.steps_done,
                                    "attempts": w.state.attempts} for w in raised), "now": now},
            )

    rows = []
    for w in works.values():
        for i, g in enumerate(w.graded):
            rec = g.record
            g.reason_dicts = [r.as_dict() for r in g.reasons]
            rows.append({
                "id": g.warning_id, "source": rec.source, "source_ref": rec.source_ref,
                "occurred_at": rec.occurred_at, "phone": rec.phone, "fraud_type": rec.fraud_type,
                "signal": rec.signal, "region_code": rec.region_code,
                "amount_at_risk": None if rec.amount_at_risk is None else str(rec.amount_at_risk),
                "risk_score": rec.risk_score, "subject": rec.subject, "details": rec.details,
                "case_id": w.state.case_id, "task_id": w.state.task_id, "tier": w.state.tier,
                "due_at": w.state.due_at, "reasons": g.reason_dicts,
                "merged": not (w.is_new and i == 0), "notices": rec.notices or None,
                "ingested_by": rec.actor or actor, "ingest_unit": rec.unit, "new_case": w.is_new,
            })
    if rows:
        counts = (await session.execute(
            sql(_INSERT_CASES_TASKS_WARNINGS),
            {"cases": recordset({"id": w.state.case_id, "task_id": w.state.task_id, "phone": w.phone,
                                 "tier": w.state.tier, "region_code": w.state.region_code, "n": w.warning_count,
                                 "first_at": w.first_warning_at, "fraud_type": w.state.fraud_type,
                                 "policy_version": w.policy_version, "steps_done": w.state.steps_done,
                                 "due_at": w.state.due_at, "has_chat": w.state.has_chat,
                                 "attempts": w.state.attempts} for w in new_cases),
             "warnings": recordset(rows), "now": now},
        )).one()
        if counts.cases != len(new_cases):
            raise RetryBatch("another transaction opened a case for the same person")
        if counts.warnings != len(rows):
            raise RetryBatch("a record was stored by a concurrent request with the same (source, source_ref) and unit")
    await enqueue(session, jobs, now=now)
