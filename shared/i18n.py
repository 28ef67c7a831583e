"""Words people read, in Chinese (the default) and English: one mechanism for the consoles, the bot and the calls.

A catalogue is one or more YAML files whose leaves are `{zh: ..., en: ...}`.
Keys are either flat (`status.open: {zh: 待处置, en: open}`, as the console
files write them) or nested (`alerts: {fake_loan: {zh: ..., en: ...}}`); a
lookup by the dotted path `alerts.fake_loan` finds either. Every leaf must
carry every language, checked when the catalogue loads, so a missing English
text fails at start rather than in front of a citizen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"


def lang_of(lang: str | None) -> str:
    """A supported language, Chinese when unknown or unset."""
    return lang if lang in LANGS else DEFAULT_LANG


def _is_leaf(node: Any) -> bool:
    return isinstance(node, Mapping) and DEFAULT_LANG in node and isinstance(node[DEFAULT_LANG], str)


class Catalog:
    """The texts of one or more YAML files, merged in order (a later file's key replaces an earlier one's)."""

    def __init__(self, *files: Path, required_langs: Iterable[str] = LANGS) -> None:
        self.data: dict[str, Any] = {}
        for file in files:
            self.data.update(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
        missing = [f"{path} ({lang})" for path, leaf in self.leaves() for lang in required_langs if not leaf.get(lang)]
        if missing:
            raise ValueError(f"texts without a translation in {', '.join(str(f) for f in files)}: {missing[:10]}")

    def leaves(self, node: Any = None, prefix: str = "") -> Iterable[tuple[str, Mapping[str, Any]]]:
        """Every text in the catalogue with its dotted key (entries that are not texts, such as voice settings, skipped)."""
        node = self.data if node is None else node
        for key, value in node.items():
            path = f"{prefix}{key}"
            if _is_leaf(value):
                yield path, value
            if isinstance(value, Mapping):  # a text may carry texts of its own (a template's title)
                yield from self.leaves({k: v for k, v in value.items() if k not in LANGS}, path + ".")

    def node(self, key: str) -> Any:
        """The entry at `key` (flat or dotted path), or None."""
        if key in self.data:
            return self.data[key]
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return _is_leaf(self.node(key))

    def text(self, key: str, lang: str | None, *, fallback: str | None = None, **values: object) -> str:
        """The text at `key` in `lang` with {placeholders} filled; `fallback` key when absent; else the key itself."""
        leaf = self.node(key)
        if not _is_leaf(leaf) and fallback is not None:
            leaf = self.node(fallback)
        if not _is_leaf(leaf):
            return key
        text = leaf.get(lang_of(lang)) or leaf[DEFAULT_LANG]
        return text.format(**values) if values else text

    def translator(self, lang: str | None) -> Callable[..., str]:
        """`t(key, **values)` bound to one language (what templates call)."""
        def t(key: str, **values: Any) -> str:
            return self.text(key, lang, **values)
        return t
