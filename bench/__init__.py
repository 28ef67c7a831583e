"""`shouhu bench`: the benchmarks, one module each (ingest, bot, calls, consoles, queue, faults, replicas),
outside the services they measure."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

Benchmark = Callable[[bool], Awaitable[dict[str, float]]]


def registry() -> dict[str, Benchmark]:
    from bench.bot import bench_bot
    from bench.calls import bench_calls
    from bench.consoles import bench_consoles
    from bench.faults import bench_faults
    from bench.ingest import bench_ingest
    from bench.queue import bench_queue
    from bench.replicas import bench_replicas

    return {"ingest": bench_ingest, "bot": bench_bot, "calls": bench_calls, "consoles": bench_consoles,
            "queue": bench_queue, "faults": bench_faults, "replicas": bench_replicas}


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
