"""Code style and architecture are checked by tools, not by memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ["shared", "services", "infra", "shouhu", "bench", "tests"]


def test_ruff_finds_nothing() -> None:
    """`ruff check` (rules in pyproject.toml) passes on all code."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *PACKAGES], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_architecture_contracts_hold() -> None:
    """import-linter: no service imports another, shared/ imports no service, the sandbox knows no service."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
