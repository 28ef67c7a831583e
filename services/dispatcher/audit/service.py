"""Searching the dispatch log (the API's GET /v1/audit and the console's audit page share this). Read-only.

Filters are checked here, once for both: a bad one is refused with the field named (`BadFilter`), never ignored.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.sql import sql

# Ids are UUIDv7: the first 12 hex digits are the creation time in ms, so two ids made in the same minute share
# their first 8. A short id is therefore written "<first 8>…<last 6>" (the last 6 are random), and a search takes
# a prefix of at least 8 hex digits, optionally with such a tail.
MIN_PREFIX_HEX = 8
_ID_RE = re.compile(r"^([0-9a-f]{8,32})(?:(?:…|\.\.\.)([0-9a-f]{1,12}))?$")
MAX_MATCHES = 10
ID_KINDS = ("task", "case", "warning")


def short_id(value: uuid.UUID | str | None) -> str:
    """The id as pages show it: first 8 and last 6 hex digits (unambiguous in practice, and searchable)."""
    if value is None:
        return ""
    text = str(value)
    return f"{text[:8]}…{text[-6:]}"


class BadFilter(ValueError):
    """A search filter that cannot be used: which field, why, and for an ambiguous id the candidates."""

    def __init__(self, field_name: str, reason: str, *, code: str, matches: list[IdMatch] | None = None) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason
        self.code = code  # the console's message key suffix: what went wrong, in words, in either language
        self.matches = matches or []


@dataclass(frozen=True, slots=True)
class IdMatch:
    kind: str  # task | case | warning
    id: uuid.UUID
    case_id: uuid.UUID
    at: datetime
    region_code: str


def parse_id_prefix(value: str) -> tuple[uuid.UUID, uuid.UUID, str | None]:
    """The UUID range a prefix (dashes allowed, at least 8 hex digits) covers, and the tail it must end with."""
    match = _ID_RE.match(value.strip().lower().replace("-", ""))
    if not match:
        raise BadFilter("id", f"give at least {MIN_PREFIX_HEX} hex digits of a task, case or warning id "
                              "(e.g. 0193a4f2 or 0193a4f2…9c01d3)", code="id_short")
    head, tail = match.groups()
    return uuid.UUID(head.ljust(32, "0")), uuid.UUID(head.ljust(32, "f")), tail


_IDS = sql(
    "(SELECT 'task' AS kind, id, case_id, created_at AS at, region_code FROM tasks"
    "  WHERE id BETWEEN :lo AND :hi AND region_code LIKE :unit AND (:tail = '' OR id::text LIKE '%' || :tail)"
    "  ORDER BY id LIMIT :n)"
    " UNION ALL (SELECT 'case', id, id, created_at, region_code FROM cases"
    "  WHERE id BETWEEN :lo AND :hi AND region_code LIKE :unit AND (:tail = '' OR id::text LIKE '%' || :tail)"
    "  ORDER BY id LIMIT :n)"
    " UNION ALL (SELECT 'warning', id, case_id, received_at, region_code FROM warnings"
    "  WHERE id BETWEEN :lo AND :hi AND region_code LIKE :unit AND (:tail = '' OR id::text LIKE '%' || :tail)"
    "  ORDER BY id LIMIT :n)"
)


async def resolve_id(session: AsyncSession, *, unit: str, prefix: str) -> IdMatch | None:
    """The one task, case or warning in `unit` whose id starts with `prefix` (None: none does).

    Raises BadFilter when the prefix is too short or malformed, or matches more than one id (listing them).
    """
    lo, hi, tail = parse_id_prefix(prefix)
    rows = (await session.execute(_IDS, {"lo": lo, "hi": hi, "unit": unit + "%", "tail": tail or "",
                                         "n": MAX_MATCHES + 1})).all()
    matches = [IdMatch(kind=r.kind, id=r.id, case_id=r.case_id, at=r.at, region_code=r.region_code) for r in rows]
    if len(matches) > 1:
        shown = matches[:MAX_MATCHES]
        raise BadFilter("id", f"ambiguous: {len(matches) if len(matches) <= MAX_MATCHES else 'more than ' + str(MAX_MATCHES)}"
                              " ids start with this; give more digits: "
                              + ", ".join(f"{m.kind} {m.id}" for m in shown), code="id_ambiguous", matches=shown)
    return matches[0] if matches else None


# Every action the services write to the log (the consoles' catalogues name each in words: action.<code>).
ACTIONS = frozenset({
    "task.created", "warning.merged", "warning.joined_from_other_unit", "task.channel_started",
    "task.channel_result", "task.late_result", "task.step_skipped", "task.visit_requested", "task.escalated",
    "task.breached", "task.closed", "task.loss_reported", "task.outcome_refused", "task.reassigned",
    "task.callback_scheduled", "task.callback_requested", "task.not_me", "task.phone_failed", "payment_stop.requested",
    "payment_stop.details", "payment_stop.noted", "payment_stop.sent", "payment_stop.confirmed",
    "payment_stop.failed", "visit.created", "visit.claimed", "visit.reported", "visit.not_found", "visit.escalated",
    "visit.cancelled", "visit.handed_over", "clue.reported", "clue.routed", "clue.answered", "clue.closed", "citizen.bound",
    "citizen.unbound", "bot.press_refused", "campaign.scheduled", "campaign.started", "campaign.finished",
    "campaign.cancelled", "console.signed_in", "console.signed_out", "key.created",
    "key.revoked", "audit.chain_keyed",
})


def known_action(action: str) -> bool:
    """An action code the log uses ("task.breached"), or a family of them ("task")."""
    return action in ACTIONS or any(a.startswith(action + ".") for a in ACTIONS)


@dataclass
class Filters:
    """Checked search filters; `entity` is what an id prefix resolved to (or None when none matched)."""

    task_id: uuid.UUID | None = None
    case_id: uuid.UUID | None = None
    actor: str | None = None
    action: str | None = None
    from_: datetime | None = None
    to: datetime | None = None
    id_given: bool = False
    entity: IdMatch | None = None


async def check_filters(session: AsyncSession, *, unit: str, id_prefix: str | None = None,
                        task_id: uuid.UUID | None = None, case_id: uuid.UUID | None = None, actor: str | None = None,
                        action: str | None = None, from_: datetime | None = None,
                        to: datetime | None = None) -> Filters:
    """Check and resolve the filters (BadFilter names the field); an id prefix becomes a task or case filter."""
    if action is not None and not known_action(action):
        raise BadFilter("action", f"unknown action {action!r}: use one of the log's actions (e.g. task.breached) "
                                  "or a family (e.g. task)", code="action_unknown")
    if from_ is not None and to is not None and from_ >= to:
        raise BadFilter("from", "must be before to", code="range")
    filters = Filters(task_id=task_id, case_id=case_id, actor=actor, action=action, from_=from_, to=to)
    if id_prefix:
        filters.id_given = True
        filters.entity = await resolve_id(session, unit=unit, prefix=id_prefix)
        if filters.entity is not None:
            if filters.entity.kind == "task":
                filters.task_id = filters.entity.id
            else:  # a case, or a warning: its entries are on its case
                filters.case_id = filters.entity.case_id
    return filters


async def search(session: AsyncSession, *, unit: str, task_id: uuid.UUID | None = None,
                 case_id: uuid.UUID | None = None, actor: str | None = None, action: str | None = None,
                 from_: datetime | None = None, to: datetime | None = None, cursor: int | None = None,
                 limit: int = 100, newest_first: bool = False) -> tuple[list[Any], int | None]:
    """Entries in `unit` matching every filter given; returns (page, next cursor or None).

    `actor` matches any part of the actor (a key's name or id, "channel:auto_call", "citizen"); `action` an
    action or a family ("task" = every "task.…"). Entries with no region are visible to nationwide keys only.
    Oldest first for the API (a cursor walks forward); newest first for the console.
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if cursor:
        where.append("seq < :cursor" if newest_first else "seq > :cursor")
        params["cursor"] = cursor
    if unit:
        where.append("region_code LIKE :unit")
        params["unit"] = unit + "%"
    for column, value in (("task_id", task_id), ("case_id", case_id)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if actor is not None:
        where.append("strpos(lower(actor), lower(:actor)) > 0")
        params["actor"] = actor
    if action is not None:
        where.append("(action = :action OR left(action, length(:action) + 1) = :action || '.')")
        params["action"] = action
    if from_ is not None:
        where.append("at >= :from_")
        params["from_"] = from_
    if to is not None:
        where.append("at < :to")
        params["to"] = to
    statement = ("SELECT seq, at, actor, action, task_id, case_id, region_code, body, hash FROM audit_log"
                 + (" WHERE " + " AND ".join(where) if where else "")
                 + f" ORDER BY seq {'DESC' if newest_first else ''} LIMIT :limit")
    rows = (await session.execute(sql(statement), params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more else None)
