"""Business metrics (Prometheus), shared so every process exports the same names."""

from __future__ import annotations

from prometheus_client import Counter

WARNINGS_INGESTED = Counter("shouhu_warnings_total", "Warning records answered, by result and tier",
                            ["status", "tier"])
TASKS_CLOSED = Counter("shouhu_tasks_closed_total", "Tasks closed, by outcome and whether within the deadline",
                       ["outcome", "within_deadline"])
TASK_EVENTS = Counter("shouhu_task_events_total", "Escalations, breaches, visits and emergencies",
                      ["event"])
