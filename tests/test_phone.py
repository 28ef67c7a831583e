"""Phone normalisation (shared/phone.py): the fast path for Chinese mobile numbers answers as libphonenumber does."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from shared.phone import InvalidPhone, _fast_cn_mobile, normalize_phone


def _libphonenumber(text: str) -> str | None:
    """The full path's answer: E.164 when libphonenumber reads a valid number, else None."""
    try:
        number = phonenumbers.parse(text.strip(), "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _shapes(digits: str) -> list[str]:
    return [digits, f"+86{digits}", f"0086{digits}", f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}",
            f"{digits[:3]}-{digits[3:7]}-{digits[7:]}", f"+86-{digits[:3]}-{digits[3:7]}-{digits[7:]}",
            f" 0086 {digits} ", f"{digits[:3]} {digits[3:]}"]


def test_fast_path_agrees_with_libphonenumber_on_every_mobile_prefix() -> None:
    """Every 1xx prefix (valid, unassigned, and carrier-code-like ones) in every common shape: same answer."""
    rng = random.Random(7)
    checked = fast = 0
    for prefix in range(100, 200):
        for _ in range(6):
            digits = f"{prefix}{rng.randrange(10**8):08d}"
            for text in _shapes(digits):
                expected = _libphonenumber(text)
                got = _fast_cn_mobile(text.strip())
                if got is not None:
                    fast += 1
                    assert got == expected, text
                if expected is None:
                    with pytest.raises(InvalidPhone):
                        normalize_phone(text)
                else:
                    assert normalize_phone(text) == expected, text
                checked += 1
    assert fast > checked // 2  # the common shapes do take the fast path


def test_other_shapes_take_the_full_path() -> None:
    """Landlines, other countries, full-width digits and 86 without a plus are libphonenumber's to read."""
    for text in ("010-6552 9988", "+44 20 7946 0958", "１３８００１３８０００", "8613800138000", "(138) 0013 8000",
                 "17951 13800138000", "013800138000"):
        assert _fast_cn_mobile(text) is None, text
        assert (normalize_phone(text) if _libphonenumber(text) else None) == _libphonenumber(text), text
