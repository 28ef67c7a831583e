"""Warning records on the wire: validation that names the field and the reason, and the answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shared.clock import LOCAL_TZ
from shared.phone import InvalidPhone, normalize_phone
from shared.validation import AwareDatetime, FiniteDecimal, FreeJson, SafeText, escape_invalid, not_in_future

FRAUD_TYPES = (
    "task_brushing", "fake_investment", "pig_butchering", "impersonating_police", "fake_customer_service",
    "fake_loan", "impersonating_acquaintance", "fake_credit_repair", "game_trading", "online_dating",
    "predatory_loan", "other",
)
SIGNALS = (
    "transfer_in_progress", "transfer_to_flagged_account", "remote_control_app", "screen_sharing",
    "fraud_call_received", "fraud_app_installed", "fraud_site_visited", "fraud_sms_received", "other",
)
# First two digits of China's administrative division codes (GB/T 2260).
PROVINCE_CODES = frozenset(
    ["11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82"]
)
MAX_DETAILS_BYTES = 16_384
# Deeper than this, `details` is not a record an operator will read, and walking it costs the batch.
MAX_DETAILS_DEPTH = 8
# Upstream clocks drift; a warning stamped a little in the future is still taken.
FUTURE_TOLERANCE = timedelta(minutes=5)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def check_region_code(value: str) -> str:
    value = value.strip()
    if len(value) != 6 or not value.isdigit():
        raise ValueError("must be a 6-digit administrative division code, e.g. 330106")
    if value[:2] not in PROVINCE_CODES:
        raise ValueError(f"{value[:2]} is not a province-level code")
    if value[2:4] == "00" and value[4:] != "00":
        raise ValueError("a district code needs its city digits (positions 3-4 are 00)")
    return value


def birth_date_from_id(id_number: str) -> date:
    """Validate an 18-character resident ID number (checksum, birth date) and return the birth date."""
    if len(id_number) != 18 or not id_number[:17].isdigit() or id_number[17] not in "0123456789X":
        raise ValueError("must be an 18-character resident ID number (17 digits and a check digit or X)")
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(id_number[:17], _ID_WEIGHTS, strict=True)) % 11]
    if check != id_number[17]:
        raise ValueError("check digit does not match (mistyped ID number?)")
    try:
        return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        raise ValueError("birth date inside the ID number is not a real date") from None


def _no_bool(value: object) -> object:
    """JSON true/false is not a number: pydantic would read `"age": false` as 0 and grade on it."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


class SubjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: SafeText(64) | None = None
    age: int | None = Field(default=None, ge=0, le=130)
    gender: Literal["male", "female", "other", "unknown"] | None = None
    id_number: SafeText(18) | None = None

    @field_validator("age", mode="before")
    @classmethod
    def _age_not_a_flag(cls, value: object) -> object:
        return _no_bool(value)

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.upper()
        birth_date_from_id(value)
        return value


class WarningIn(BaseModel):
    """One warning record as an upstream system sends it (contract: POST /v1/warnings)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{
                "source": "bank-icbc-zj", "source_ref": "ICBC-20261121-000187", "phone": "138 0013 8000",
                "fraud_type": "impersonating_police", "signal": "transfer_in_progress", "region_code": "330106",
                "occurred_at": "2026-11-21T10:02:00+08:00", "amount_at_risk": 80000, "risk_score": 92,
                "subject": {"name": "张某", "age": 67, "gender": "female"},
                "details": {"counterparty_account": "6222****1234"},
            }]
        },
    )

    # Every text field: bounded, no control characters (shared/validation.py says why).
    source: SafeText(64, min_length=1) = Field(description="The sending system's name")
    source_ref: SafeText(128, min_length=1) = Field(
        description="The sender's own id for this record; (source, source_ref) is the idempotency key,"
                    " per unit of the sending key")
    phone: SafeText(32, min_length=1) = Field(
        description="The person's phone number, any common format; stored as E.164")
    fraud_type: SafeText(64, min_length=1)
    signal: SafeText(64, min_length=1)
    region_code: SafeText(16, min_length=1) = Field(description="6-digit administrative division code, e.g. 330106")
    # A time without an offset is read as China Standard Time (said in the answer's `warnings`).
    occurred_at: AwareDatetime(assume_tz=LOCAL_TZ) = Field(
        description="When it happened, ISO 8601 with an offset; from 2000-01-01 to 5 minutes after now")
    amount_at_risk: FiniteDecimal(ge=0, le=Decimal("1e13"), decimal_places=2) | None = Field(
        default=None, description="CNY at risk; a finite number, 0 to 10^13, at most 2 decimals")
    risk_score: int | None = Field(default=None, ge=0, le=100)
    subject: SubjectIn | None = None
    details: FreeJson(max_bytes=MAX_DETAILS_BYTES, max_depth=MAX_DETAILS_DEPTH) | None = Field(
        default=None, description=f"Free JSON object: at most {MAX_DETAILS_BYTES} bytes encoded,"
                                  f" {MAX_DETAILS_DEPTH} levels deep, no control characters in its strings,"
                                  " finite numbers, integers within 64 bits")

    @field_validator("risk_score", "amount_at_risk", mode="before")
    @classmethod
    def _numbers_not_flags(cls, value: object) -> object:
        return _no_bool(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise ValueError(str(exc).removeprefix("phone ")) from None

    @field_validator("region_code")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region_code(value)

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        # "Now" is the service's clock, given as validation context (tests freeze it), so that this
        # error is reported together with every other field's, not after them.
        now = (info.context or {}).get("now")
        if now is not None:
            future = not_in_future(value if value.tzinfo else value.replace(tzinfo=LOCAL_TZ), now=now,
                                   tolerance=FUTURE_TOLERANCE)
            if future:
                raise ValueError(future)
        return value


@dataclass(slots=True)
class ValidRecord:
    """A warning that passed validation, normalised, ready to grade."""

    index: int
    source: str
    source_ref: str
    phone: str
    fraud_type: str
    signal: str
    region_code: str
    occurred_at: datetime
    amount_at_risk: Decimal | None
    risk_score: int | None
    age: int | None
    subject: dict[str, Any] | None
    details: dict[str, Any] | None
    notices: list[str] = field(default_factory=list)
    actor: str = ""  # who sent it, when records from several callers share one transaction
    unit: str = ""  # the sending key's unit: scopes the idempotency key and what the answer may show
    case_warnings: int = 1  # warnings in its case with this one; set while grading (policy reads it)


@dataclass(slots=True)
class Rejected:
    index: int
    errors: list[dict[str, str]]


def _age_at(birth: date, when: date) -> int:
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def to_valid_record(index: int, parsed: WarningIn) -> ValidRecord:
    """Normalise codes and times; unknown codes become `other` with a notice, never a rejection.

    Every refusal happened while parsing (`parse_record`), the time window included.
    """
    notices: list[str] = []
    fraud_type = parsed.fraud_type.lower()
    if fraud_type not in FRAUD_TYPES:
        notices.append(f"fraud_type '{parsed.fraud_type}' is not a known code; recorded as 'other'")
        fraud_type = "other"
    signal = parsed.signal.lower()
    if signal not in SIGNALS:
        notices.append(f"signal '{parsed.signal}' is not a known code; recorded as 'other'")
        signal = "other"
    occurred_at = parsed.occurred_at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=LOCAL_TZ)
        notices.append("occurred_at had no UTC offset; read as China Standard Time (+08:00)")
    subject = parsed.subject.model_dump(exclude_none=True) if parsed.subject else None
    age = parsed.subject.age if parsed.subject else None
    if parsed.subject and parsed.subject.id_number:
        birth_age = _age_at(birth_date_from_id(parsed.subject.id_number), occurred_at.date())
        if age is None:
            age = birth_age
        elif abs(age - birth_age) > 1:
            notices.append(f"subject.age {age} disagrees with the ID number ({birth_age}); graded with {age}")
    return ValidRecord(
        index=index, source=parsed.source, source_ref=parsed.source_ref, phone=parsed.phone,
        fraud_type=fraud_type, signal=signal, region_code=parsed.region_code, occurred_at=occurred_at,
        amount_at_risk=parsed.amount_at_risk, risk_score=parsed.risk_score, age=age, subject=subject or None,
        details=parsed.details, notices=notices,
    )


def errors_of(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        name = ""
        for part in loc:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
        reason = err.get("msg", "invalid").removeprefix("Value error, ")
        # A key sent with a lone surrogate comes back escaped: the answer must stay valid JSON.
        out.append({"field": escape_invalid(name or "record"), "reason": escape_invalid(reason)})
    return out


def parse_record(index: int, raw: Any, *, now: datetime) -> ValidRecord | Rejected:
    """Validate one raw record (a dict from JSON, CSV or JSON Lines); `now` (the service's clock) bounds occurred_at."""
    if not isinstance(raw, dict):
        return Rejected(index, [{"field": "record", "reason": "must be a JSON object"}])
    try:
        parsed = WarningIn.model_validate(raw, context={"now": now})
    except ValidationError as exc:
        return Rejected(index, errors_of(exc))
    return to_valid_record(index, parsed)


class Reasons(BaseModel):
    rule: str
    effect: str
    why: str


OTHER_UNIT_NOTICE = ("another unit already handles this person: this warning joined that unit's open case,"
                     " so one team makes the calls; its case, task, tier and deadline are that unit's to see")


class WarningResult(BaseModel):
    """The answer for one record.

    When the person already has an open case in a unit the sending key does not
    cover, the warning joins that case (one team calls the citizen), and the
    answer carries only what the sender may see: `warning_id` (its own record),
    `merged: true`, `handled_elsewhere: true` and a notice in `warnings`;
    `case_id`, `task_id`, `tier`, `due_at` and `reasons` are left out. The owning
    unit's task shows a "warning.joined_from_other_unit" event naming the
    sending unit and source.
    """

    status: Literal["accepted", "duplicate", "rejected"]
    warning_id: uuid.UUID | None = None
    case_id: uuid.UUID | None = Field(default=None, description="Left out when handled_elsewhere")
    task_id: uuid.UUID | None = Field(default=None, description="Left out when handled_elsewhere")
    tier: Literal["high", "medium", "low"] | None = Field(default=None, description="Left out when handled_elsewhere")
    due_at: datetime | None = Field(default=None, description="Left out when handled_elsewhere")
    reasons: list[Reasons] | None = Field(default=None, description="Left out when handled_elsewhere")
    merged: bool | None = None
    handled_elsewhere: bool | None = Field(
        default=None, description="True when the warning joined an open case of a unit outside the sending key's"
                                  " (present only then)")
    warnings: list[str] = Field(default_factory=list, description="Notices: accepted, but read differently")
    errors: list[dict[str, str]] | None = Field(
        default=None, description="For a rejected record: each field and the rule it broke; nothing was stored")


class BatchIn(BaseModel):
    warnings: list[Any] = Field(max_length=1000, description="Up to 1,000 warning records")


class BatchOut(BaseModel):
    results: list[WarningResult]
    accepted: int
    duplicates: int
    rejected: int
