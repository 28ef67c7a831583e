"""`shouhu bench consoles` runs end to end in its quick mode (a smoke test of the harness, not of the figures)."""

from __future__ import annotations

import pytest

from bench.consoles import bench_consoles


async def test_quick_mode_loads_measures_and_keeps_the_audit_chain_valid(server_url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh database with 5,000 tasks, a real dispatcher process, every figure; the loaded chain verifies."""
    monkeypatch.setenv("DATABASE_URL", server_url)
    monkeypatch.setenv("SHOUHU_BENCH_CONSOLE_TASKS", "5000")
    figures = await bench_consoles(True)
    assert figures["tasks_loaded"] == 5000
    assert figures["audit_rows"] > 3 * 5000 and figures["audit_chain_ok"] == 1.0
    for name in ("overview", "overview_api", "compliance", "audit_case", "api_baseline", "healthz_baseline"):
        assert figures[f"{name}_p95_ms"] >= figures[f"{name}_p50_ms"] > 0
    assert {"overview_ratio", "compliance_ratio", "audit_case_ratio", "overview_c4_p95_ms"} <= set(figures)
