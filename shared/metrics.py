"""Business metrics (Prometheus), shared so every process exports the same names."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WARNINGS_INGESTED = Counter("shouhu_warnings_total", "Warning records answered, by result and tier",
                            ["status", "tier"])
TASKS_CLOSED = Counter("shouhu_tasks_closed_total", "Tasks closed, by outcome and whether within the deadline",
                       ["outcome", "within_deadline"])
TASK_EVENTS = Counter("shouhu_task_events_total", "Escalations, breaches, visits and emergencies",
                      ["event"])
GROUP_COMMIT_RECORDS = Histogram("shouhu_ingest_group_commit_records", "Single-record POSTs sharing one transaction",
                                 buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
GROUP_COMMIT_SECONDS = Histogram("shouhu_ingest_group_commit_seconds", "Time of one group-commit transaction",
                                 buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1))
SEAT_CLAIM_SECONDS = Histogram("shouhu_seat_claim_seconds", "Time of a seat's claim statement (the queue's index probe)",
                               buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
