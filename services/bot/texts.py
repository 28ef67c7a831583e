"""The bot's words: alert templates per fraud type and UI texts, in Chinese (default) and English.

Both live in YAML next to the code (alerts/templates.yaml, texts.yaml) so they
can be edited without touching Python; they are loaded once through the
project's one text mechanism (shared/i18n.py), which refuses a text missing a language.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.i18n import LANGS, Catalog, lang_of

__all__ = ["LANGS", "alerts", "lang_of", "t", "templates", "ui"]
_HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def alerts() -> Catalog:
    """alerts/templates.yaml: header, footer, one warning per fraud type, button labels, recorded answers."""
    return Catalog(_HERE / "alerts" / "templates.yaml")


@lru_cache(maxsize=1)
def ui_catalog() -> Catalog:
    return Catalog(_HERE / "texts.yaml")


def templates() -> dict[str, Any]:
    return alerts().data


def ui() -> dict[str, Any]:
    return ui_catalog().data


def t(key: str, lang: str | None, **values: object) -> str:
    """A UI text in `lang`, with {placeholders} filled."""
    return ui_catalog().text(key, lang, **values)
