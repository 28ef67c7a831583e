"""The README's pictures (docs/*.png), taken by the browser tests at the moment they check what is shown.

With SHOUHU_SCREENSHOTS=1 (`make screenshots`) the tests write them; otherwise this does nothing. So a
picture in the README is always of a page as a passing test saw it, and never older than the last run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"


def enabled() -> bool:
    return os.environ.get("SHOUHU_SCREENSHOTS") == "1"


async def readme_screenshot(target: Any, name: str, **options: Any) -> Path | None:
    """Save docs/`name` from a Playwright page or locator when enabled; the path written, or None."""
    if not enabled():
        return None
    path = DOCS / name
    await target.screenshot(path=str(path), **options)
    return path
