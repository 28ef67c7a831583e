"""Properties (hypothesis) of the warning schema and the policy, against the real dispatcher and PostgreSQL.

Whatever a sender posts, alone or in a batch: never a 5xx, never a half-stored
case; a record is either stored and graded, or refused with a 422 that names
the field, and then nothing changed. Valid records are never refused.

Bounded for CI: a fixed number of examples, derandomized (the same examples on
every run), no example database. `SHOUHU_HYPOTHESIS_EXAMPLES=2000` explores more;
`--hypothesis-show-statistics` prints how many inputs of each class were tried.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.dispatcher.policy.schemas import TIER_ORDER, TIERS
from services.dispatcher.policy.service import GradeInput, load_policy
from services.dispatcher.warnings.schemas import FRAUD_TYPES, SIGNALS, parse_record
from shared.validation import check_free_json, forbidden_character
from tests.conftest import T0

EXAMPLES = int(os.environ.get("SHOUHU_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

KEY_UNITS = ["", "33", "3301", "330106", "330102"]
REGIONS = ["330106", "330102", "330206", "110101", "440305"]
# Few people and few refs, so examples meet: merges, replays, other units' cases.
PHONES = ["13900000001", "+86 139 0000 0002", "008613900000003", "139-0000-0004"]
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (8, 0), (-5, 0), (5, 45), (14, 0), (-12, 0))]
TEXT_FIELDS = ["source", "source_ref", "phone", "fraud_type", "signal", "region_code", "subject.name",
               "subject.id_number"]
REQUIRED = ["source", "source_ref", "phone", "fraud_type", "signal", "region_code", "occurred_at"]
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


# ---- valid records -------------------------------------------------------------------------------------

@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    born = draw(st.dates(min_value=datetime(1930, 1, 1).date(), max_value=datetime(2015, 12, 31).date()))
    body = f"110105{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

occurred_times = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=T0.replace(tzinfo=None) - timedelta(days=1),
                 timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat()),
    st.sampled_from([(T0 + timedelta(minutes=5)).isoformat(), "2000-01-01T00:00:00+00:00",
                     "2026-11-21T09:55:00", "2026-11-21 09:55:00+08:00", "2026-11-21T01:55:00Z"]),
)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source": draw(st.sampled_from(["bank-a", "telecom-b", " 96110 "])),
        "source_ref": draw(st.one_of(st.sampled_from(["r1", "r2", "r3"]), st.uuids().map(str))),
        "phone": draw(st.sampled_from(PHONES)),
        "fraud_type": draw(st.one_of(st.sampled_from(FRAUD_TYPES), st.sampled_from(["Crypto_Airdrop", "未知"]))),
        "signal": draw(st.one_of(st.sampled_from(SIGNALS), st.just("FRAUD_CALL_RECEIVED"))),
        "region_code": draw(st.sampled_from(REGIONS)),
        "occurred_at": draw(occurred_times),
    }
    if draw(st.booleans()):
        amount = draw(st.decimals(min_value=0, max_value=Decimal("1e13"), places=2))
        record["amount_at_risk"] = draw(st.sampled_from([str(amount), float(amount) if amount < 10**9 else str(amount)]))
    if draw(st.booleans()):
        record["risk_score"] = draw(st.integers(0, 100))
    if draw(st.booleans()):
        subject = draw(st.fixed_dictionaries({}, optional={
            "name": st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=10),
            "age": st.integers(0, 130), "gender": st.sampled_from(["male", "female", "other", "unknown"]),
            "id_number": id_numbers()}))
        record["subject"] = subject
    if draw(st.booleans()):
        details = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
        try:
            check_free_json(details, max_bytes=16_384, max_depth=8)
        except ValueError:
            details = {"memo": "line one\nline two\tend"}
        record["details"] = details
    return record


# ---- bad input, by class -------------------------------------------------------------------------------

# Refused by amount_at_risk (0..1e13, 2 decimals), risk_score (0..100) and subject.age (0..130) alike,
# except 101 (a fine age and amount) and 101.5 (a fine amount). The "maybe" ones are some fields' business (a digit in another script, hex).
NUMBERS_REFUSED = ["NaN", "Infinity", "-Infinity", "1e400", "-0.01", "1e14", "0.001", "1e-400", 10**30, -1,
                   1e308, -1e-9, "101.5", 101]
NUMBERS_MAYBE = ["0x10", "٣", "1e2", 100.0, "  42  "]
MAX_LENGTHS = {"source": 64, "source_ref": 128, "phone": 32, "fraud_type": 64, "signal": 64, "region_code": 16,
               "subject.name": 64, "subject.id_number": 18}
CONTROL = ["\u0000", "\u0001", "\u0008", "\u001b[2J", "\u007f", "\u0085", "\u009b", "\u202e", "\u2066", "\u2028"]


def _embed(chars: list[str]) -> st.SearchStrategy[str]:
    # Inside the text: at either end, the whitespace among them (NEL, line separator) is stripped, as it should be.
    around = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=5)
    return st.tuples(around, st.sampled_from(chars), around).map("".join)


@dataclass
class Corruption:
    cls: str  # the class of bad input, for the statistics
    path: str  # where it went: "source", "subject.name", "details", ...
    value: Any = None
    certain: bool = True  # certainly invalid there: the answer must be a 422 naming `path`
    drop: bool = False


@dataclass
class Case:
    record: Any
    corruptions: list[Corruption] = field(default_factory=list)

    @property
    def certainly_invalid(self) -> list[Corruption]:
        return [c for c in self.corruptions if c.certain]


@st.composite
def corruptions(draw: st.DrawFn) -> Corruption:
    cls = draw(st.sampled_from(["control", "long", "surrogate", "wrong_type", "datetime", "number", "details",
                                "subject", "missing", "extra"]))
    if cls == "control":
        return Corruption("control characters in a text field", draw(st.sampled_from(TEXT_FIELDS)),
                          draw(_embed(CONTROL)))
    if cls == "long":
        path = draw(st.sampled_from(sorted(MAX_LENGTHS)))
        return Corruption("over-long text", path,
                          "9" * draw(st.sampled_from([MAX_LENGTHS[path] + 1, 5_000, 300_000])))
    if cls == "surrogate":
        return Corruption("lone surrogates (invalid UTF-16/UTF-8)", draw(st.sampled_from(TEXT_FIELDS + ["details"])),
                          draw(st.sampled_from(["\ud800", "a\udc80b", "\udfff"])))
    if cls == "wrong_type":
        path = draw(st.sampled_from(REQUIRED + ["amount_at_risk", "risk_score", "subject", "details", "subject.age"]))
        value = draw(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.lists(st.integers(), max_size=2),
                               st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                               st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)))
        return Corruption("wrong JSON types", path, value, certain=False)
    if cls == "datetime":
        value = draw(st.one_of(
            st.sampled_from(["0001-01-01T00:00:00+08:00", "1999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00",
                             "2100-01-01T00:00:00Z", "2027-01-01T00:00:00+08:00", "2026-02-30T00:00:00Z",
                             "2026-11-21T09:55:00+25:00", "21/11/2026", "", "now", "2026-13-01",
                             (T0 + timedelta(minutes=5, seconds=1)).isoformat()]),
            st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1999, 12, 31),
                         timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat()),
            # A day on: in the future whatever the offset (they span -12:00 to +14:00).
            st.datetimes(min_value=T0.replace(tzinfo=None) + timedelta(days=1), max_value=datetime(9999, 12, 30),
                         timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat())))
        return Corruption("naive, implausible or impossible datetimes", "occurred_at", value)
    if cls == "number":
        path = draw(st.sampled_from(["amount_at_risk", "risk_score", "subject.age"]))
        value = draw(st.sampled_from(NUMBERS_REFUSED + NUMBERS_MAYBE))
        certain = value in NUMBERS_REFUSED and not (path == "subject.age" and value == 101) and not (
            path == "amount_at_risk" and value in (101, "101.5"))
        return Corruption("non-finite, out-of-range or over-precise numbers", path, value, certain=certain)
    if cls == "details":
        value = draw(st.sampled_from([
            {"a": "x\u0000"}, {"k\u0001": 1}, {"a": 2**64}, {"a": -(2**65)}, {"a": 1e300}, {"a": [[[[[[[[[0]]]]]]]]]},
            {"memo": "x" * 20_000}, {"a": {"\u202e": "y"}}, {"a": ["ok", "\u001b[0m"]}, {"k" * 200: 1}]))
        return Corruption("details: deep, big, huge integers, control characters", "details", value)
    if cls == "subject":
        path, value = draw(st.sampled_from([
            ("subject.id_number", "110105194912310020"), ("subject.id_number", "11010519491231002"),
            ("subject.id_number", "110105194902300025"), ("subject.age", 200), ("subject.gender", "robot"),
            ("subject.nickname", "x"), ("subject", "张某")]))
        return Corruption("subject: bad ID number, age, gender, unknown field", path, value)
    if cls == "missing":
        return Corruption("a required field missing", draw(st.sampled_from(REQUIRED)), drop=True)
    return Corruption("an unknown extra field", draw(st.sampled_from(["sourceref", "tier", "case_id", "phone2"])),
                      draw(json_leaves))


def _apply(record: dict[str, Any], c: Corruption) -> None:
    head, _, tail = c.path.partition(".")
    target = record
    if tail:
        if not isinstance(record.get(head), dict):
            record[head] = {}
        target = record[head]
    key = tail or head
    if c.drop:
        target.pop(key, None)
    elif c.path == "details" and c.cls.startswith("lone"):
        record["details"] = {"memo": c.value}
    else:
        target[key] = c.value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    record = draw(valid_records())
    if draw(st.integers(0, 4)) == 0:
        return Case(record)  # a valid record: never refused
    chosen = draw(st.lists(corruptions(), min_size=1, max_size=2))
    for c in chosen:
        _apply(record, c)
    return Case(record, chosen)


def body_of(value: Any) -> bytes:
    # ensure_ascii: a lone surrogate travels as the escape "\ud800", as a careless sender would write it.
    return json.dumps(value, ensure_ascii=True).encode()


# ---- what must hold after every request ----------------------------------------------------------------

TABLES = ("warnings", "cases", "tasks", "jobs", "audit_log")


async def snapshot(dispatcher) -> dict[str, int]:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session:
        row = (await session.execute(text("SELECT " + ", ".join(
            f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES)))).mappings().one()
    return dict(row)


async def assert_nothing_half_stored(dispatcher) -> None:  # noqa: ANN001
    """Every case has its task, its warnings (as many as it counts), its jobs; every warning its audit entry."""
    async with dispatcher.sessionmaker() as session:
        bad = (await session.execute(text(
            "SELECT"
            " (SELECT count(*) FROM cases c WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.case_id = c.id)),"
            " (SELECT count(*) FROM cases c WHERE c.warning_count <>"
            "   (SELECT count(*) FROM warnings w WHERE w.case_id = c.id)),"
            " (SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id)),"
            " (SELECT count(*) FROM warnings) - (SELECT count(*) FROM audit_log WHERE action IN"
            "   ('task.created', 'warning.merged', 'warning.joined_from_other_unit'))"))).one()
    assert tuple(bad) == (0, 0, 0, 0), f"half-stored: cases without task {bad[0]}, miscounted cases {bad[1]}," \
                                       f" tasks without jobs {bad[2]}, warnings without audit entry {bad[3]}"


def assert_field_errors(errors: Any) -> None:
    assert isinstance(errors, list) and errors, errors
    for error in errors:
        assert isinstance(error.get("field"), str) and error["field"], error
        assert isinstance(error.get("reason"), str) and error["reason"], error
        assert "internal error" not in error["reason"], error  # a bug answered as a refusal is still a bug


def assert_named(case: Case, errors: list[dict[str, str]]) -> None:
    """A record certainly invalid in a field is refused naming that field (or the body, if it was not JSON)."""
    named = {e["field"] for e in errors}
    if "body" in named:
        return
    for c in case.certainly_invalid:
        head = c.path.split(".")[0]
        assert any(n == c.path or n.startswith(head) for n in named), (c, errors)


def covers(unit: str, record: Any) -> bool:
    region = record.get("region_code") if isinstance(record, dict) else None
    return isinstance(region, str) and region.strip().startswith(unit)


# ---- the properties ------------------------------------------------------------------------------------

@SETTINGS
@given(case=cases(), unit=st.sampled_from(KEY_UNITS))
async def test_any_single_record_is_stored_and_graded_or_refused_by_field(dispatcher, case: Case, unit: str) -> None:
    """POST /v1/warnings: 201/200 stored and graded, 403 outside the unit, or 422 naming fields; never 5xx."""
    for c in case.corruptions:
        event(f"class: {c.cls}")
    before = await snapshot(dispatcher)
    resp = await dispatcher.client.post("/v1/warnings", content=body_of(case.record),
                                        headers={**await dispatcher.headers("ingest", unit),
                                                 "Content-Type": "application/json"})
    event(f"status: {resp.status_code}")
    assert resp.status_code in (200, 201, 403, 422), resp.text
    if not case.corruptions:
        assert resp.status_code != 422, resp.text  # a valid record is never refused
        assert (resp.status_code == 403) == (not covers(unit, case.record)), resp.text
    if case.certainly_invalid:
        assert resp.status_code == 422, resp.text
    if resp.status_code in (403, 422):
        if resp.status_code == 422:
            assert_field_errors(resp.json()["errors"])
            assert_named(case, resp.json()["errors"])
        assert await snapshot(dispatcher) == before  # refused: nothing changed
    else:
        answer = resp.json()
        async with dispatcher.sessionmaker() as session:
            row = (await session.execute(text(
                "SELECT w.tier AS warning_tier, t.tier, t.region_code, w.ingest_unit FROM warnings w"
                " JOIN tasks t ON t.id = w.task_id WHERE w.id = :id"), {"id": answer["warning_id"]})).one()
        assert row.ingest_unit == unit
        if answer.get("handled_elsewhere"):
            assert not row.region_code.startswith(unit) and "case_id" not in answer
        else:
            assert row.region_code.startswith(unit)
            assert answer["tier"] in TIERS and answer["reasons"][0]["rule"] == "signal"
            if resp.status_code == 201:
                assert answer["tier"] == row.tier
    await assert_nothing_half_stored(dispatcher)


@SETTINGS
@given(batch=st.lists(st.one_of(cases(), st.sampled_from([Case("not an object", [Corruption("non-object", "record")]),
                                                          Case([1, 2], [Corruption("non-object", "record")])])),
                      min_size=1, max_size=6),
       unit=st.sampled_from(KEY_UNITS))
async def test_any_batch_answers_each_record_and_stores_exactly_the_accepted(dispatcher, batch: list[Case],
                                                                             unit: str) -> None:
    """POST /v1/warnings/batch: one result per record, in order; exactly the accepted ones are new rows."""
    for case in batch:
        for c in case.corruptions:
            event(f"class: {c.cls}")
    before = await snapshot(dispatcher)
    resp = await dispatcher.client.post("/v1/warnings/batch", content=body_of({"warnings": [c.record for c in batch]}),
                                        headers={**await dispatcher.headers("ingest", unit),
                                                 "Content-Type": "application/json"})
    event(f"status: {resp.status_code}")
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 422:  # only a body that is not JSON at all (a lone surrogate escape)
        assert [e["field"] for e in resp.json()["errors"]] == ["body"], resp.text
        assert await snapshot(dispatcher) == before
        return
    results = resp.json()["results"]
    assert len(results) == len(batch)
    for case, result in zip(batch, results, strict=True):
        assert result["status"] in ("accepted", "duplicate", "rejected")
        if result["status"] == "rejected":
            assert_field_errors(result["errors"])
            assert_named(case, result["errors"])
        else:
            assert not case.certainly_invalid, (case, result)
            assert result["warning_id"]
        if not case.corruptions and covers(unit, case.record):
            assert result["status"] != "rejected", result
    after = await snapshot(dispatcher)
    assert after["warnings"] - before["warnings"] == sum(r["status"] == "accepted" for r in results)
    await assert_nothing_half_stored(dispatcher)


POLICY = load_policy(None)


@st.composite
def grade_inputs(draw: st.DrawFn) -> GradeInput:
    return GradeInput(
        fraud_type=draw(st.sampled_from(FRAUD_TYPES)), signal=draw(st.sampled_from(SIGNALS)),
        amount_at_risk=draw(st.none() | st.decimals(min_value=0, max_value=Decimal("1e13"), places=2)),
        risk_score=draw(st.none() | st.integers(0, 100)), age=draw(st.none() | st.integers(0, 130)),
        region_code=draw(st.sampled_from(REGIONS)), case_warnings=draw(st.integers(1, 20)))


def _tier_from_reasons(reasons: list) -> str:  # noqa: ANN001
    level, raises = TIER_ORDER[reasons[0].effect], 0
    for reason in reasons[1:]:
        if reason.effect.startswith("at least "):
            level = max(level, TIER_ORDER[reason.effect.removeprefix("at least ")])
        elif reason.effect.startswith("raise "):
            raises += int(reason.effect.removeprefix("raise "))
    return TIERS[min(level + raises, 2)]


@settings(max_examples=EXAMPLES * 5, deadline=None, derandomize=True, database=None)
@given(g=grade_inputs(), more_amount=st.decimals(min_value=0, max_value=Decimal("1e6"), places=2),
       more_score=st.integers(0, 100), more_warnings=st.integers(0, 5))
def test_the_policy_grade_is_explained_by_its_reasons_and_only_rises(g: GradeInput, more_amount: Decimal,
                                                                     more_score: int, more_warnings: int) -> None:
    """The tier follows from the listed reasons, is never below the signal's, and more risk never lowers it."""
    tier, reasons = POLICY.grade(g)
    assert reasons[0].rule == "signal" and reasons[0].effect == POLICY.doc.signals[g.signal]
    assert TIER_ORDER[tier] >= TIER_ORDER[POLICY.doc.signals[g.signal]]
    assert _tier_from_reasons(reasons) == tier
    worse = dataclasses.replace(g, amount_at_risk=(g.amount_at_risk or Decimal(0)) + more_amount,
                                risk_score=min(100, (g.risk_score or 0) + more_score),
                                case_warnings=g.case_warnings + more_warnings)
    assert TIER_ORDER[POLICY.grade(worse)[0]] >= TIER_ORDER[tier]


@SETTINGS
@given(record=valid_records())
async def test_a_new_persons_answer_is_the_policys_grade(dispatcher, record: dict[str, Any]) -> None:
    """For a person with no open case, the answer's tier, reasons and deadline are the policy's, exactly."""
    record = {**record, "source_ref": os.urandom(8).hex(),
              "phone": f"139{int.from_bytes(os.urandom(4), 'big') % 10**8:08d}"}  # someone new
    resp = await dispatcher.client.post("/v1/warnings", json=record, headers=await dispatcher.headers("ingest", ""))
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    parsed = parse_record(0, record, now=T0)
    parsed.case_warnings = 1
    tier, reasons = dispatcher.runtime.store.current.grade(parsed)
    assert answer["merged"] is False
    assert (answer["tier"], answer["reasons"]) == (tier, [r.as_dict() for r in reasons])
    deadline = timedelta(minutes=dispatcher.runtime.store.current.playbook(tier).deadline_minutes)
    assert datetime.fromisoformat(answer["due_at"]) == dispatcher.clock.now() + deadline


@SETTINGS
@given(value=st.one_of(st.text(alphabet=st.characters(codec=None, exclude_categories=())),
                       st.recursive(st.one_of(json_leaves, st.integers(-(2**70), 2**70), st.floats(),
                                              st.text(alphabet=st.characters(exclude_categories=()))),
                                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                                    max_leaves=10)))
async def test_what_validation_accepts_postgresql_stores(sessionmaker, value: Any) -> None:
    """Any text SafeText lets through is storable as text and jsonb; any JSON FreeJson lets through, as jsonb."""
    if isinstance(value, str):
        accepted = forbidden_character(value, multiline=True) is None
        event(f"text accepted: {accepted}")
        if not accepted:
            return
        async with sessionmaker() as session:
            stored = (await session.execute(text("SELECT CAST(:v AS text), CAST(CAST(:j AS text) AS jsonb)::text"),
                                            {"v": value, "j": orjson.dumps(value).decode()})).one()
        assert stored[0] == value and orjson.loads(stored[1]) == value
        return
    try:
        check_free_json({"v": value}, max_bytes=16_384, max_depth=8)
    except ValueError:
        event("json accepted: False")
        return
    event("json accepted: True")
    async with sessionmaker() as session:
        stored = (await session.execute(text("SELECT CAST(CAST(:j AS text) AS jsonb)::text"),
                                        {"j": orjson.dumps({"v": value}).decode()})).scalar_one()
    assert same_json(orjson.loads(stored), {"v": value})  # and what comes back, orjson can write again


def same_json(stored: Any, sent: Any) -> bool:
    """Equal as JSON: jsonb keeps numbers as decimals, so a float may come back as the integer it equals."""
    if isinstance(sent, float):
        return isinstance(stored, int | float) and math.isclose(float(stored), sent, rel_tol=1e-15, abs_tol=0.0)
    if isinstance(sent, dict):
        return isinstance(stored, dict) and stored.keys() == sent.keys() and all(
            same_json(stored[k], v) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(stored, list) and len(stored) == len(sent) and all(
            same_json(a, b) for a, b in zip(stored, sent, strict=True))
    return stored == sent and type(stored) is type(sent)


def test_the_window_is_checked_without_overflow_at_the_edges_of_time() -> None:
    """Year 1 and year 9999 with extreme offsets are refused by the window rule, not by an arithmetic error."""
    for raw in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00"):
        result = parse_record(0, {"source": "s", "source_ref": "r", "phone": "13900000001", "fraud_type": "other",
                                  "signal": "other", "region_code": "330106", "occurred_at": raw}, now=T0)
        assert result.errors == [{"field": "occurred_at", "reason": "must be between 2000-01-01 and 2100-01-01"
                                  " (outside that window it cannot be a real time for this system)"}]
    assert datetime(2000, 1, 1, tzinfo=UTC) <= T0
