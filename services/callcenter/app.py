"""The callcenter service: 96110 automated warning calls through Twilio (and, with issue #4's rest, seats).

"call.auto" jobs from the dispatcher become paced Twilio calls; Twilio's
signed webhooks drive the call (warning, one key) and report its end; results
go back to the dispatcher. "call.stop" jobs cancel the calls the dispatcher no
longer wants, in a worker of their own. Key 2 rings the seats' phones while the
citizen holds (calls/transfers.py). Without TWILIO_* credentials it calls the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from services.callcenter.calls.pacing import CallPacer
from services.callcenter.calls.reconcile import Reconciler
from services.callcenter.calls.service import CallPlacer
from services.callcenter.calls.stops import CallStopper, make_stop_worker
from services.callcenter.calls.views import router as twilio_router
from services.callcenter.console.views import console
from services.callcenter.console.views import router as console_router
from services.callcenter.seats.desk_views import router as desk_router
from services.callcenter.seats.scheduled import WrapUpSweep
from services.callcenter.seats.views import router as seats_router
from services.callcenter.settings import CallcenterSettings
from shared import contracts
from shared.auth.service import KeyCache
from shared.clock import Clock
from shared.db import open_database
from shared.queue.worker import Handler, Worker
from shared.ratelimit.service import SharedLimits
from shared.web import install_common

log = structlog.get_logger(__name__)
WRAP_UP_SWEEP_S = 5.0  # a seat whose wrap-up ran out, and that nobody reads, is available within this


def make_twilio(settings: CallcenterSettings) -> Client:
    client = Client(settings.account_sid(), settings.auth_token(), http_client=AsyncTwilioHttpClient())
    client.api.base_url = settings.api_base()  # the sandbox, or Twilio
    return client


def create_app(settings: CallcenterSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or CallcenterSettings()
    clock = clock or settings.clock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url, engine, sessionmaker = await open_database(settings, application_name="shouhu-callcenter")
        client = make_twilio(settings)
        limits = SharedLimits(url, pool_size=2, application_name="shouhu-callcenter-limits")
        placer = CallPlacer(client, sessionmaker, clock=clock,
                            pacer=CallPacer(limits, key=settings.account_sid(),
                                            calls_per_s=settings.calls_per_s),
                            from_number=settings.from_number(),
                            public_url=settings.public_url, daily_cap=settings.daily_attempt_cap,
                            autodial_countries=settings.autodial_regions(), ring_timeout_s=settings.ring_timeout_s,
                            dial_deadline_s=settings.dial_deadline_s, dial_in_flight_s=settings.dial_in_flight_s())
        app.state.settings, app.state.clock = settings, clock
        app.state.sessionmaker, app.state.key_cache = sessionmaker, KeyCache()
        stopper = CallStopper(client, sessionmaker, clock=clock)
        app.state.twilio, app.state.placer, app.state.stopper = client, placer, stopper
        # Calls whose end never reached us are asked about at Twilio (calls/reconcile.py): on start, after a gap
        # (a webhook that could not reach the database: shared/web.py calls on_database_unavailable), periodically.
        reconciler = Reconciler(client, sessionmaker, clock=clock, interval_s=settings.reconcile_interval_s,
                                overdue_s=settings.expected_call_s(), in_flight_s=settings.dial_in_flight_s(),
                                concurrency=settings.reconcile_concurrency)
        app.state.reconciler = reconciler
        app.state.on_database_unavailable = reconciler.note_gap
        reconciling = (asyncio.create_task(reconciler.run(), name="callcenter-reconciler")
                       if settings.reconciles() else None)
        # Wrap-ups nobody has looked at end on time (seats/scheduled.py), where the workers run.
        wrap_ups = WrapUpSweep(sessionmaker, clock=clock, interval_s=WRAP_UP_SWEEP_S)
        sweeping = (asyncio.create_task(wrap_ups.run(), name="callcenter-wrap-ups") if settings.run_worker else None)
        workers: list[Worker] = []
        if settings.run_worker:
            # Only automated calls are taken here; operator calls wait for the seats to claim them.
            workers.append(Worker(sessionmaker, queue="callcenter", clock=clock, database_url=url,
                                  handlers={contracts.PlaceCall.KIND: Handler(placer.place, transactional=False)},
                                  concurrency=settings.worker_concurrency,
                                  poll_interval_s=settings.worker_poll_interval_s, lease_s=settings.worker_lease_s,
                                  grace_s=settings.worker_grace_s))
            # Stop orders in a worker of their own: never behind paced calls (calls/stops.py).
            workers.append(make_stop_worker(stopper, sessionmaker, clock=clock, database_url=url,
                                            poll_interval_s=settings.worker_poll_interval_s,
                                            lease_s=settings.worker_lease_s, grace_s=settings.worker_grace_s))
        tasks = [asyncio.create_task(w.run(), name=f"callcenter-worker-{i}") for i, w in enumerate(workers)]
        log.info("callcenter.started", api_base=settings.api_base(), sandbox=settings.sandbox,
                 public_url=settings.public_url)
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()
            reconciler.stop()
            wrap_ups.stop()
            if sweeping is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(sweeping, timeout=2)
            if reconciling is not None:
                # A sweep waiting on Twilio is cut short: nothing it left undone is lost (the next start sweeps).
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(reconciling, timeout=2)
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.http_client.close()  # the aiohttp session inside AsyncTwilioHttpClient
            await limits.close()
            await engine.dispose()

    app = FastAPI(title="Shouhu callcenter", version="0.1.0", lifespan=lifespan,
                  description="96110 outbound warning calls (Twilio) and, to come, the seat-operator API.")
    install_common(app, service="callcenter")
    app.include_router(twilio_router)
    app.include_router(seats_router)
    app.include_router(desk_router)
    console.install(app)
    app.include_router(console_router)
    return app
