"""Code style is checked by a tool, not by memory."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_finds_nothing() -> None:
    """`ruff check` (rules in pyproject.toml) passes on all code."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "shared", "services", "tests"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
