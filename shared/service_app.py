"""The skeleton every service app shares: database, API-key cache, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.auth.service import KeyCache
from shared.db import make_engine, make_sessionmaker, resolve_database_url, wait_for_database
from shared.settings import CommonSettings
from shared.web import install_common


def create_service_app(name: str, settings: CommonSettings, *, title: str, description: str,
                       extra_lifespan: Callable[[FastAPI], object] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = resolve_database_url(settings.database_url, settings.data_dir)
        await wait_for_database(url, timeout_s=settings.db_wait_s)
        engine = make_engine(url, pool_size=settings.db_pool_size, application_name=f"shouhu-{name}")
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.database_url = url
        app.state.key_cache = KeyCache()
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
    install_common(app, service=name)
    return app
