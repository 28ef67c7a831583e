"""Phone numbers: one canonical form (E.164) per person, and masking for logs."""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "CN"


class InvalidPhone(ValueError):
    pass


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form ('+8613800138000') of a number written any common way.

    `138 0013 8000`, `+86-138-0013-8000` and `008613800138000` all give the same
    string, so warnings about one person from different senders meet in one case.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("phone is empty")
    if len(text) > 32:
        raise InvalidPhone("phone is longer than 32 characters")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"phone cannot be read as a telephone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("phone is not a valid telephone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """'+8613800138000' -> '+86138****8000': enough to recognise, not enough to dial."""
    if len(e164) <= 7:
        return "*" * len(e164)
    return e164[:-8] + "****" + e164[-4:] if len(e164) >= 12 else e164[:3] + "****" + e164[-4:]


# Chinese mobile numbers in any of the written forms, and 18-character resident ID numbers.
_PHONE_RE = re.compile(r"(?<!\d)(?:\+?86[- ]?|0086)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")
_ID_RE = re.compile(r"(?<![0-9A-Za-z])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])\d{2}\d{3}[\dXx](?![0-9A-Za-z])")


def mask_sensitive_text(text: str) -> str:
    """Mask every phone number and ID number inside free text (log lines, error messages)."""
    text = _ID_RE.sub(lambda m: m.group(0)[:4] + "**********" + m.group(0)[-4:], text)
    return _PHONE_RE.sub(lambda m: _mask_digits(m.group(0)), text)


def _mask_digits(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 11 else "****"
