"""The shared edge types (shared/validation.py): each refusal names its rule; what they accept is storable."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from shared.clock import LOCAL_TZ
from shared.validation import AwareDatetime, FiniteDecimal, FreeJson, SafeText, parse_json


class Form(BaseModel):
    name: SafeText(8) | None = None
    note: SafeText(100, multiline=True) | None = None
    at: AwareDatetime() | None = None
    local_at: AwareDatetime(assume_tz=LOCAL_TZ) | None = None
    amount: FiniteDecimal(ge=0, le=Decimal("1e13"), decimal_places=2) | None = None
    extra: FreeJson(max_bytes=64, max_depth=2) | None = None


def reason(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Form.model_validate(fields)
    (error,) = caught.value.errors()
    return f"{error['loc'][0]}: {error['msg'].removeprefix('Value error, ')}"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "a\x00b"}, "name: must not contain a control character: U+0000 at position 1"),
    ({"name": "a\nb"}, "name: must not contain a control character: U+000A at position 1"),
    ({"name": "abc\u202edef"}, "name: must not contain a bidirectional-override character: U+202E at position 3"),
    ({"name": "123456789"}, "name: String should have at most 8 characters"),
    ({"note": "ok\tthen\r\nnot\x1b[0m"}, "note: must not contain a control character: U+001B at position 12"),
    ({"at": "2026-11-21T10:02:00"}, "at: needs a UTC offset, e.g. 2026-11-21T10:02:00+08:00"),
    ({"at": "1999-12-31T23:59:59Z"}, "at: must be between 2000-01-01 and 2100-01-01 (outside that window it cannot"
                                     " be a real time for this system)"),
    ({"local_at": "0001-01-01T00:00:00"}, "local_at: must be between 2000-01-01 and 2100-01-01 (outside that window"
                                          " it cannot be a real time for this system)"),
    ({"amount": "NaN"}, "amount: Input should be a finite number"),
    ({"amount": "-Infinity"}, "amount: Input should be a finite number"),
    ({"extra": {"a": {"b": {}}}}, "extra: at .a.b: nested deeper than 2 levels"),
    ({"extra": {"a": "x" * 64}}, "extra: larger than 64 bytes once encoded (72)"),
    ({"extra": {"a": float("nan")}}, "extra: at .a: numbers must be finite (no NaN or Infinity)"),
])
def test_each_refusal_names_the_field_and_the_rule(fields: dict, expected: str) -> None:
    """Control characters, lengths, offsets, windows, non-finite numbers and JSON bounds: one clear reason each."""
    assert reason(**fields) == expected


def test_what_is_allowed_passes_unchanged() -> None:
    """Line breaks in multi-line text, a naive time read in the assumed zone (returned naive), 2 decimals."""
    form = Form(name=" 张某 ", note="line one\nline two\tend", local_at="2026-11-21T10:02:00", amount="80000.50",
                extra={"a": [1, 2.5, None, True, "x\ny"]})
    assert form.name == "张某"
    assert form.local_at == datetime(2026, 11, 21, 10, 2)
    assert form.amount == Decimal("80000.50")


def test_parse_json_reads_what_field_rules_refuse_and_refuses_what_is_not_json() -> None:
    """NaN and lone surrogate escapes reach the field rules; a 5,000-digit number or 2,000 levels do not crash it."""
    assert parse_json(b'{"a": NaN}')["a"] != parse_json(b'{"a": NaN}')["a"]  # NaN, for FiniteDecimal to refuse
    assert parse_json(b'{"a": "\\ud800"}') == {"a": "\ud800"}
    for bad in (b"{nope", b"[" * 2000 + b"]" * 2000, b'{"a": 1' + b"0" * 5000 + b"}", b'"\xff"'):
        with pytest.raises(ValueError, match="^not valid JSON"):
            parse_json(bad)
