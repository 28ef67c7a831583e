"""Is every word a console shows a word, not a code? The check the Chromium walkthroughs run on each page.

A page in Chinese must not show the database's language: an outcome (`loss_reported`), a state (`in_progress`),
an audit action (`task.created`), a catalogue key whose text is missing (`desk.title`, which `Catalog.text`
returns when the key has no text). The codes are gathered from the catalogues' own keys and the shared
vocabularies, so a code added tomorrow is checked without touching this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from shared.contracts import vocab

ROOT = Path(__file__).resolve().parents[2]

# Words a Chinese page may show in Latin letters: names of things, units, the number to call.
ALLOWED = frozenset({"telegram", "twilio", "shouhu", "id", "api", "csv", "ok", "sms", "app", "url", "https", "http",
                     "json", "utc", "pdf", "cny"})

# An identifier-shaped token: snake_case (`loss_reported`) or dotted (`task.created`, `desk.title`).
_CODE_SHAPED = re.compile(r"(?<![\w./:@-])[a-z][a-z0-9]*(?:[._][a-z0-9]+)+(?![\w/@-])")
_WORD = re.compile(r"(?<![\w./:@-])[a-z]{3,}(?![\w./@-])")


def _catalogue_files() -> list[Path]:
    return [p for p in (ROOT / "shared").rglob("*.yaml") if "migrations" not in p.parts] + \
        list((ROOT / "services").rglob("*.yaml"))


def _keys(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str) or key in ("zh", "en"):
                continue
            yield prefix + key
            yield from _keys(value, prefix + key + ".")


@cache
def codes() -> frozenset[str]:
    """Every code a page could leak: catalogue keys (whole and their last part) and the shared vocabularies."""
    found: set[str] = set()
    for file in _catalogue_files():
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for key in _keys(data):
            found.add(key)
            found.update(key.split("."))
    for name in dir(vocab):
        value = getattr(vocab, name)
        if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            found.update(value)
        elif isinstance(value, dict):
            found.update(k for k in value if isinstance(k, str))
    return frozenset(c for c in found if c and c.lower() not in ALLOWED)


def untranslated(text: str) -> list[str]:
    """Codes in `text` (a page's visible text in Chinese): identifier-shaped tokens and bare vocabulary words."""
    known = codes()
    leaks = {m.group(0) for m in _CODE_SHAPED.finditer(text)}
    leaks |= {m.group(0) for m in _WORD.finditer(text) if m.group(0) in known}
    return sorted(w for w in leaks if w.lower() not in ALLOWED)


# A passage marked as another language (a campaign's English message shown beside the Chinese one) is content in
# that language, not a code: it is left out of the Chinese page's check.
_CHINESE_TEXT_JS = """() => {
    const foreign = [...document.querySelectorAll('body [lang]:not([lang^="zh"])')];
    const before = foreign.map(e => e.style.display);
    foreign.forEach(e => { e.style.display = 'none'; });
    const text = document.body.innerText;
    foreign.forEach((e, i) => { e.style.display = before[i]; });
    return text;
}"""


async def chinese_text(page: Any) -> str:
    """The page's visible text, less the passages marked as another language.

    A check right after a click may land while the next page loads (no body yet): wait for it, and read again
    once if the page was replaced under the read.
    """
    for attempt in range(3):
        await page.wait_for_load_state()
        try:
            return await page.evaluate(_CHINESE_TEXT_JS)
        except Exception:  # the document was swapped mid-read (navigation): the next one is complete
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def assert_all_words(page: Any, *, allow: Iterable[str] = ()) -> None:
    """Fail when the page's visible text shows a code instead of a word (`allow`: tokens this page may show)."""
    text = await chinese_text(page)
    leaks = [w for w in untranslated(text) if w not in set(allow)]
    assert not leaks, f"{page.url} shows codes instead of words: {leaks}"
