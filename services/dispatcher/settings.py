"""The dispatcher's settings (one pydantic-settings class, environment variables as in the contract)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class DispatcherSettings(CommonSettings):
    policy_path: str | None = Field(default=None, alias="SHOUHU_POLICY")
    host: str = Field(default="127.0.0.1", alias="SHOUHU_DISPATCHER_HOST")
    port: int = Field(default=8000, alias="SHOUHU_DISPATCHER_PORT")
    # Run the dispatcher's own job worker (timers, channel results) inside the API process.
    run_worker: bool = Field(default=True, alias="SHOUHU_DISPATCHER_WORKER")
    worker_concurrency: int = Field(default=8, alias="SHOUHU_WORKER_CONCURRENCY")
    # Job leases: short, so a crashed worker's jobs run elsewhere within ~lease + 2.5 s; heartbeats
    # (every lease/3) keep a long job's lease alive. On stop, running jobs get the grace, then are
    # released back to the queue in their place.
    worker_lease_s: float = Field(default=10.0, alias="SHOUHU_WORKER_LEASE_S")
    worker_grace_s: float = Field(default=8.0, alias="SHOUHU_WORKER_GRACE_S")
    worker_poll_interval_s: float = Field(default=1.0, alias="SHOUHU_WORKER_POLL_INTERVAL_S")
    ingest_max_batch: int = Field(default=250, alias="SHOUHU_INGEST_MAX_BATCH")
    # Group-commit transactions in flight at once for single-record POSTs. 1: a transaction's fixed cost
    # (checkout and ping, BEGIN, seven statements, COMMIT: ~1 ms of the process's CPU) dominates a group of a
    # few records, and one transaction at a time makes the groups twice as large. With 16 clients on one
    # replica (the single-record bench's share), alternating runs on the shared 2-core machine: 1,889 and
    # 1,863 us of dispatcher CPU per record with 1 vs 2,355 and 2,525 with 2, and more records/s
    # (bench/ingest.py, "Where the time goes").
    ingest_max_inflight: int = Field(default=1, alias="SHOUHU_INGEST_MAX_INFLIGHT")
    key_cache_ttl_s: float = Field(default=30.0, alias="SHOUHU_KEY_CACHE_TTL_S")
