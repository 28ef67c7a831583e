"""Phone numbers: one canonical form (E.164) per person, and masking for logs and exports."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

DEFAULT_REGION = "CN"
# The common shape of what senders post: a Chinese mobile number, 11 digits from 1, maybe after +86 or 0086,
# grouped by spaces or hyphens. libphonenumber's parse() is ~40 us a number, a quarter of batched ingest's
# CPU; for this shape its answer is known without it (see `_fast_cn_mobile`).
_CN_MOBILE_SHAPE = re.compile(r"(?:\+86|0086)?(1[0-9]{10})")  # ASCII digits only: others take the full path
_CN_META = PhoneMetadata.metadata_for_region(DEFAULT_REGION)
# parse() would try to strip a national or carrier-selection prefix that starts this way (CN: 0, 1[12]xx,
# 179xx); such numbers take the full path.
_CN_STRIPPABLE = re.compile(_CN_META.national_prefix_for_parsing) if _CN_META else None


_Desc = tuple[frozenset[int], re.Pattern[str]]


def _compiled(descs: tuple[object, ...]) -> list[_Desc]:
    """Number descriptions from the metadata as (possible lengths, pattern), as libphonenumber reads them."""
    return [(frozenset(d.possible_length), re.compile(d.national_number_pattern))  # type: ignore[attr-defined]
            for d in descs if d is not None and d.national_number_pattern]  # type: ignore[attr-defined]


_CN_GENERAL = _compiled((_CN_META.general_desc,)) if _CN_META else []
# Valid means "some type matches", so the order is free: mobile first, what these numbers nearly always are.
_CN_TYPES = _compiled((_CN_META.mobile, _CN_META.premium_rate, _CN_META.toll_free, _CN_META.shared_cost,
                       _CN_META.voip, _CN_META.personal_number, _CN_META.pager, _CN_META.uan, _CN_META.voicemail,
                       _CN_META.fixed_line)) if _CN_META else []


def _matches(national: str, descs: list[_Desc]) -> bool:
    for lengths, pattern in descs:
        if (not lengths or len(national) in lengths) and pattern.fullmatch(national) is not None:
            return True
    return False


def _cn_valid(national: str) -> bool:
    """is_valid_number for +86 `national`: it matches the general description and some number type's
    (libphonenumber's _number_type_helper is not UNKNOWN), each with its possible lengths."""
    return bool(_CN_GENERAL) and _matches(national, _CN_GENERAL) and _matches(national, _CN_TYPES)


class InvalidPhone(ValueError):
    pass


def _fast_cn_mobile(text: str) -> str | None:
    """The E.164 form of a valid Chinese mobile number in its common written shapes, or None (take the full path).

    Same answer as parse + is_valid_number + format (tests/test_phone.py compares them): parse() would
    drop the spaces and hyphens, read +86 or 0086 (CN's international prefix 00) as the country code, and
    keep the 11 digits as the national number, since none of CN's national prefixes starts them
    (`_CN_STRIPPABLE`). Validity is libphonenumber's rule on its own metadata (`_cn_valid`).
    """
    if _CN_STRIPPABLE is None:
        return None
    match = _CN_MOBILE_SHAPE.fullmatch(text.replace(" ", "").replace("-", ""))
    if match is None:
        return None
    national = match.group(1)
    if _CN_STRIPPABLE.match(national):
        return None
    if not _cn_valid(national):
        return None  # the full path says why
    return "+86" + national


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form ('+8613800138000') of a number written any common way.

    `138 0013 8000`, `+86-138-0013-8000` and `008613800138000` all give the same
    string, so warnings about one person from different senders meet in one case.
    """
    raw = raw or ""
    # Repeat warnings about one person usually carry the same written number: answered from a cache
    # (bounded in entries, and only short keys are kept).
    return _normalize_cached(raw, default_region) if len(raw) <= 64 else _normalize(raw, default_region)


def _normalize(raw: str, default_region: str) -> str:
    text = raw.strip()
    if default_region == DEFAULT_REGION and len(text) <= 32:
        fast = _fast_cn_mobile(text)
        if fast is not None:
            return fast
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


_normalize_cached = lru_cache(maxsize=16_384)(_normalize)


def mask_phone(e164: str) -> str:
    """'+8613800138000' -> '+86138****8000': enough to recognise, not enough to dial."""
    if len(e164) <= 7:
        return "*" * len(e164)
    return e164[:-8] + "****" + e164[-4:] if len(e164) >= 12 else e164[:3] + "****" + e164[-4:]


def mask_number(raw: str) -> str:
    """A value known to be a phone number, masked whatever its country or format ('+44 20 7946 0958' -> '+4420****0958').

    Unreadable as a number: all of it masked.
    """
    try:
        number = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return "****"
    if not phonenumbers.is_possible_number(number):
        return "****"
    return mask_phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


# 18-character resident ID numbers (6-digit region, birth date, sequence, check digit) and the older
# 15-digit ones (2-digit year, no check digit). Masked before phone numbers: an ID holds phone-like runs.
_MONTH_DAY = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_ID_RE = re.compile(rf"(?<![0-9A-Za-z])\d{{6}}(?:(?:18|19|20)\d{{2}}{_MONTH_DAY}\d{{3}}[\dXx]|\d{{2}}{_MONTH_DAY}\d{{3}})"
                    r"(?![0-9A-Za-z])")
# A run of digits that may be an international number written without its "+" (447911123456).
_BARE_RUN_RE = re.compile(r"(?<![0-9A-Za-z+])\d{10,15}(?![0-9A-Za-z])")
# Where a phone number could be: 7 or more digits with at most a few separators between them, not inside a
# word or an id. Text without one skips libphonenumber's matcher, which costs ~100 us even on a UUID (and a
# log line nearly always carries one).
_CANDIDATE_RE = re.compile(r"(?<![0-9A-Za-z])\+?(?:\d[\s\-.()/]{0,3}){6,}\d(?![0-9A-Za-z])")
# ISO dates and times (every log line has some): never phone numbers, left out of that first look.
_DATETIME_RE = re.compile(r"(?<!\d)(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)"
                          r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def mask_sensitive_text(text: str) -> str:
    """Mask every phone number (any country, any written form) and ID number inside free text.

    Phone numbers are found by libphonenumber's matcher (valid numbers only, so
    amounts, counts, dates and ids stay readable), read as Chinese when they
    carry no country code; a run of 10-15 digits that is a valid number once a
    "+" is put in front (a foreign number written without it) is masked too.
    """
    text = _ID_RE.sub(_mask_id, text)
    if not _CANDIDATE_RE.search(_DATETIME_RE.sub(" ", text)):
        return text
    pieces: list[str] = []
    last = 0
    for match in phonenumbers.PhoneNumberMatcher(text, DEFAULT_REGION, leniency=phonenumbers.Leniency.VALID):
        pieces.append(text[last:match.start])
        pieces.append(mask_phone(phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)))
        last = match.end
    pieces.append(text[last:])
    return _BARE_RUN_RE.sub(_mask_bare_run, "".join(pieces))


def _mask_id(match: re.Match[str]) -> str:
    value = match.group(0)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def _mask_bare_run(match: re.Match[str]) -> str:
    try:
        number = phonenumbers.parse("+" + match.group(0))
    except phonenumbers.NumberParseException:
        return match.group(0)
    if not phonenumbers.is_valid_number(number):
        return match.group(0)
    return mask_phone("+" + match.group(0))


def mask_id_number(raw: str) -> str:
    """A value known to be an ID number: first and last four characters kept at most."""
    value = raw.strip()
    return value[:4] + "*" * (len(value) - 8) + value[-4:] if len(value) >= 12 else "****"
