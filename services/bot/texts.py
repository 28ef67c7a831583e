"""The bot's words: alert templates per fraud type and UI texts, in Chinese (default) and English.

Both live in YAML next to the code (alerts/templates.yaml, texts.yaml) so they
can be edited without touching Python; they are loaded once and checked at start.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

LANGS = ("zh", "en")
_HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    data = yaml.safe_load((_HERE / "alerts" / "templates.yaml").read_text(encoding="utf-8"))
    for fraud_type, texts in data["alerts"].items():
        missing = [lang for lang in LANGS if not texts.get(lang)]
        if missing:
            raise ValueError(f"alert template {fraud_type} lacks {missing}")
    return data


@lru_cache(maxsize=1)
def ui() -> dict[str, Any]:
    return yaml.safe_load((_HERE / "texts.yaml").read_text(encoding="utf-8"))


def lang_of(lang: str | None) -> str:
    return lang if lang in LANGS else "zh"


def t(key: str, lang: str | None, **values: object) -> str:
    """A UI text in `lang`, with {placeholders} filled."""
    text = ui()[key][lang_of(lang)]
    return text.format(**values) if values else text
