"""Validated types for input at the edge: what a field may hold, refused with a reason that names the rule.

Why these exist: PostgreSQL refuses some values Python accepts (a NUL in text,
`\\u0000` or a lone surrogate in jsonb, an integer past 64 bits in our JSON
encoder, a year-1 timestamp that overflows when read back in UTC), and those
turned into 500s, or worse, failed every other record in the same transaction.
Refusing them at the edge, per field, is what lets one bad record be answered
with a 422 while its neighbours are stored.

Use them as pydantic field types; each failure reads "<field>: <reason>":

    name: SafeText(64) | None = None                     # one line, at most 64 characters
    note: SafeText(2000, multiline=True) | None = None   # tab and line breaks allowed
    occurred_at: AwareDatetime()                         # offset required, 2000-01-01 .. 2100-01-01
    amount: FiniteDecimal(ge=0, le=Decimal("1e13"), decimal_places=2) | None = None
    details: FreeJson(max_bytes=16_384, max_depth=8) | None = None

`not_in_future` checks the upper edge against the service's own clock (tests
freeze it), which a type cannot see.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field, StringConstraints

# C0 and C1 control characters (NUL included) and DEL; lone surrogates (what undecodable bytes become,
# and what PostgreSQL and orjson refuse); bidirectional overrides and isolates, which make a console
# show text in another order than it was sent; line and paragraph separators.
_SINGLE_LINE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# Multi-line text (notes, memos) may also hold tab, line feed and carriage return.
_MULTILINE_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")

# Before 2000 no warning, callback or report concerns this system; the upper edge keeps arithmetic
# (an offset applied to 9999-12-31) from overflowing. Routes narrow this further with `not_in_future`.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Integers our JSON encoder (orjson) and every JSON consumer can carry: signed 64 bits. Floats are held to
# the same range: PostgreSQL's jsonb gives 1e20 back as the integer 100000000000000000000.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def parse_json(raw: bytes | str) -> Any:
    """Parse a JSON document; ValueError("not valid JSON (...)") when it is not one.

    orjson first (fast, bounded depth). What orjson refuses but Python's reader
    takes (NaN and Infinity, a lone surrogate escape such as "\\ud800", integers
    past 64 bits) is read too, so that the field rules refuse it by name: one
    record's truncated emoji must not fail the 999 records beside it in a batch.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # also bytes that are not UTF-8, and 4,300-digit integers
        raise ValueError(f"not valid JSON ({first_error})") from None


def escape_invalid(text: str) -> str:
    """`text` with lone surrogates written as escapes: safe to put in a JSON answer, a log line or a file."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def forbidden_character(value: str, *, multiline: bool = False) -> str | None:
    """The reason `value` is refused for a control or invisible-reordering character, or None when it is fine."""
    match = (_MULTILINE_FORBIDDEN if multiline else _SINGLE_LINE_FORBIDDEN).search(value)
    if match is None:
        return None
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        what = "an invalid character (a lone surrogate: not valid UTF-8 text)"
    elif char in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        what = "a bidirectional-override character"
    else:
        what = "a control character"
    return f"must not contain {what}: U+{ord(char):04X} at position {match.start()}"


def _text_checker(multiline: bool):  # noqa: ANN202
    search = (_MULTILINE_FORBIDDEN if multiline else _SINGLE_LINE_FORBIDDEN).search

    def check(value: str) -> str:
        if search(value) is not None:  # the reason is worked out only for a refusal (this runs per field)
            raise ValueError(forbidden_character(value, multiline=multiline))
        return value

    return check


_SINGLE_LINE_CHECK = _text_checker(False)
_MULTILINE_CHECK = _text_checker(True)


def SafeText(max_length: int, *, min_length: int = 0, multiline: bool = False, strip: bool = True) -> Any:  # noqa: N802
    """A string of at most `max_length` characters (after stripping) with no control characters.

    Single-line text refuses every control character; `multiline=True` lets tab,
    line feed and carriage return through (free-text notes).
    """
    return Annotated[
        str,
        StringConstraints(strip_whitespace=strip, min_length=min_length, max_length=max_length),
        AfterValidator(_MULTILINE_CHECK if multiline else _SINGLE_LINE_CHECK),
    ]


def check_datetime_window(value: datetime, *, not_before: datetime = EARLIEST, not_after: datetime = LATEST,
                          assume_tz: tzinfo | None = None) -> datetime:
    """Refuse a datetime without a UTC offset (unless `assume_tz` reads it) or outside [not_before, not_after).

    A naive value read through `assume_tz` is returned naive, so the caller can
    say that it assumed the zone.
    """
    aware = value
    if value.tzinfo is None or value.utcoffset() is None:
        if assume_tz is None:
            raise ValueError("needs a UTC offset, e.g. 2026-11-21T10:02:00+08:00")
        aware = value.replace(tzinfo=assume_tz)
    try:
        inside = not_before <= aware < not_after
    except OverflowError:  # an offset pushed it past year 1 or 9999
        inside = False
    if not inside:
        raise ValueError(f"must be between {not_before.date().isoformat()} and {not_after.date().isoformat()}"
                         " (outside that window it cannot be a real time for this system)")
    return value


def AwareDatetime(*, not_before: datetime = EARLIEST, not_after: datetime = LATEST,  # noqa: N802
                  assume_tz: tzinfo | None = None) -> Any:
    """A datetime with a UTC offset inside a plausible window (see `check_datetime_window`)."""
    return Annotated[datetime, AfterValidator(
        lambda v: check_datetime_window(v, not_before=not_before, not_after=not_after, assume_tz=assume_tz))]


def not_in_future(value: datetime, *, now: datetime, tolerance: timedelta = timedelta(minutes=5)) -> str | None:
    """The reason `value` is refused as later than `now` + `tolerance` (upstream clocks drift), or None."""
    if value > now + tolerance:
        return f"must not be more than {int(tolerance.total_seconds() // 60)} minutes in the future"
    return None


def FiniteDecimal(*, ge: Decimal | int | None = None, le: Decimal | int | None = None,  # noqa: N802
                  decimal_places: int | None = None) -> Any:
    """A decimal number: NaN and Infinity refused ("must be a finite number"), with optional bounds."""
    return Annotated[Decimal, Field(allow_inf_nan=False, ge=ge, le=le, decimal_places=decimal_places)]


class _Refused(Exception):
    """Raised inside the free-JSON walk; the path is collected on the way out (only when something is wrong)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _walk(node: Any, depth: int, max_depth: int, max_key_length: int) -> None:
    kind = type(node)
    if kind is str:
        if _MULTILINE_FORBIDDEN.search(node):
            raise _Refused(str(forbidden_character(node, multiline=True)))
    elif kind is dict:
        if depth > max_depth:
            raise _Refused(f"nested deeper than {max_depth} levels")
        for key, child in node.items():
            if type(key) is not str:
                raise _Refused("keys must be strings")
            if len(key) > max_key_length:
                raise _Refused(f"a key is longer than {max_key_length} characters")
            if _SINGLE_LINE_FORBIDDEN.search(key):
                raise _Refused(f"a key {forbidden_character(key)}")
            try:
                _walk(child, depth + 1, max_depth, max_key_length)
            except _Refused as exc:
                exc.path.append(f".{key}")
                raise
    elif kind is list:
        if depth > max_depth:
            raise _Refused(f"nested deeper than {max_depth} levels")
        for index, child in enumerate(node):
            try:
                _walk(child, depth + 1, max_depth, max_key_length)
            except _Refused as exc:
                exc.path.append(f"[{index}]")
                raise
    elif kind is int:
        if not _INT_MIN <= node <= _INT_MAX:
            raise _Refused("integers must fit in 64 bits")
    elif kind is float:
        if not math.isfinite(node):
            raise _Refused("numbers must be finite (no NaN or Infinity)")
        if not _INT_MIN <= node <= _INT_MAX:
            raise _Refused("numbers must lie within ±2^63")
    elif node is not None and kind is not bool:
        raise _Refused(f"{kind.__name__} is not a JSON value")


def check_free_json(value: Any, *, max_bytes: int, max_depth: int, max_key_length: int = 128) -> Any:
    """Refuse free JSON that is too deep, too big once encoded, or holds what the database cannot store.

    Strings (keys and values) follow the multi-line text rule (keys one-line);
    numbers must be finite and within the range of a 64-bit integer. The reason
    names the path, e.g. "at .contacts[2].name: must not contain a control
    character: U+0000 at position 3".
    """
    try:
        _walk(value, 1, max_depth, max_key_length)
    except _Refused as exc:
        raise ValueError(f"at {''.join(reversed(exc.path)) or 'the top'}: {exc.reason}") from None
    size = len(orjson.dumps(value))
    if size > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes once encoded ({size})")
    return value


def FreeJson(*, max_bytes: int, max_depth: int) -> Any:  # noqa: N802
    """A JSON object of any shape, bounded (see `check_free_json`)."""
    return Annotated[dict[str, Any], AfterValidator(
        lambda v: check_free_json(v, max_bytes=max_bytes, max_depth=max_depth))]
