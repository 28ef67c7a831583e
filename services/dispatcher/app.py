"""The dispatcher service: warnings in, graded persuasion tasks out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from services.dispatcher.audit.views import router as audit_router
from services.dispatcher.campaigns.console import router as campaigns_console_router
from services.dispatcher.campaigns.views import router as campaigns_router
from services.dispatcher.clues.views import router as clues_router
from services.dispatcher.console.views import console
from services.dispatcher.console.views import router as console_router
from services.dispatcher.deps import Runtime
from services.dispatcher.emergencies.views import router as emergencies_router
from services.dispatcher.jobs import make_worker
from services.dispatcher.policy.service import PolicyStore, load_policy
from services.dispatcher.reports.views import router as reports_router
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.tasks.views import router as tasks_router
from services.dispatcher.visits.console import router as visits_console_router
from services.dispatcher.visits.field import field
from services.dispatcher.visits.field import router as field_router
from services.dispatcher.visits.views import router as visits_router
from services.dispatcher.warnings.flows import IngestBatcher
from services.dispatcher.warnings.views import router as warnings_router
from shared.audit.keys import key_bytes
from shared.auth.service import KeyCache, ensure_bootstrap_key
from shared.clock import Clock
from shared.db import open_database, transaction
from shared.web import install_common

log = structlog.get_logger(__name__)

# Batched ingest allocates a few hundred objects per record, nearly all freed by reference counting. At the
# default generation-0 threshold (700) the cycle collector ran hundreds of times per 1,000-record batch,
# each time walking the batch's live objects: 15-20% of ingest's CPU in the profile. Collections stay
# automatic, just rarer (a few per batch); what start-up built is frozen out of them (`gc.freeze`).
GC_GEN0_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Once per process (tests start many apps in one): freeze what start-up built, then raise the threshold."""
    if gc.get_threshold()[0] >= GC_GEN0_THRESHOLD:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


DESCRIPTION = """
守护 Shouhu dispatcher: upstream systems post **warning records** about people who
are probably being defrauded right now; each is deduplicated, merged into the
person's open case, graded high / medium / low with the reasons, and turned into
a persuasion task with a deadline (2 h / 24 h / 72 h) and a plan of channels.

Authenticate with `Authorization: Bearer <api key>` (`shouhu keys create`).
"""


def create_app(settings: DispatcherSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or DispatcherSettings()
    clock = clock or settings.clock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url, engine, sessionmaker = await open_database(settings, application_name="shouhu-dispatcher")
        store = PolicyStore(load_policy(settings.policy_path))
        async with transaction(sessionmaker) as session:
            await store.register_current(session)
            if settings.bootstrap_admin_key:
                await ensure_bootstrap_key(session, secret_value=settings.bootstrap_admin_key,
                                           unit=settings.bootstrap_admin_unit)
        batcher = IngestBatcher(sessionmaker, store=store, clock=clock, max_batch=settings.ingest_max_batch,
                                max_inflight=settings.ingest_max_inflight)
        batcher.start()
        app.state.sessionmaker = sessionmaker
        app.state.key_cache = KeyCache(ttl_s=settings.key_cache_ttl_s)
        app.state.runtime = Runtime(sessionmaker=sessionmaker, store=store, clock=clock, batcher=batcher,
                                    audit_key=key_bytes(settings.audit_secret()))
        worker = None
        worker_task = None
        if settings.run_worker:
            worker = make_worker(sessionmaker, store=store, clock=clock, database_url=url,
                                 concurrency=settings.worker_concurrency, lease_s=settings.worker_lease_s,
                                 grace_s=settings.worker_grace_s,
                                 poll_interval_s=settings.worker_poll_interval_s)
            worker_task = asyncio.create_task(worker.run(), name="dispatcher-worker")
        app.state.worker = worker
        _tune_gc()
        log.info("dispatcher.started", policy_version=store.current.version, policy=store.current.doc.name)
        try:
            yield
        finally:
            if worker is not None and worker_task is not None:
                worker.stop()
                await asyncio.gather(worker_task, return_exceptions=True)
            await batcher.stop()
            await engine.dispose()

    app = FastAPI(title="Shouhu dispatcher", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_common(app, service="dispatcher")
    app.include_router(warnings_router)
    app.include_router(tasks_router)
    app.include_router(visits_router)
    app.include_router(emergencies_router)
    app.include_router(audit_router)
    app.include_router(clues_router)
    app.include_router(reports_router)
    console.install(app)
    app.include_router(console_router)
    app.include_router(campaigns_router)
    app.include_router(campaigns_console_router)
    app.include_router(visits_console_router)
    field.install(app)  # the officers' page: a second console on the same frame, at /field
    app.include_router(field_router)
    return app
