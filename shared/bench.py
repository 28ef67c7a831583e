"""`shouhu bench`: benchmarks registered by each service (see services/*/bench.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

Benchmark = Callable[[bool], Awaitable[dict[str, float]]]


def registry() -> dict[str, Benchmark]:
    from services.bot.bench import bench_bot
    from services.callcenter.bench import bench_calls
    from services.dispatcher.bench import bench_ingest
    from services.dispatcher.bench_consoles import bench_consoles

    return {"ingest": bench_ingest, "bot": bench_bot, "calls": bench_calls, "consoles": bench_consoles}


async def run_benchmarks(names: list[str], *, as_json: bool, quick: bool) -> int:
    available = registry()
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    figures: dict[str, float] = {}
    for name in names or list(available):
        figures.update(await available[name](quick))
    if as_json:
        print(json.dumps(figures))
    return 0
