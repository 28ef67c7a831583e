"""The sandbox app: fake outside services on one port (`shouhu sandbox`, :8090), and a page to play the citizen.

Each fake is an APIRouter over its own in-memory state, kept on `app.state` under its name
(`app.state.telegram`, `app.state.twilio`). Point the services at it with
`TELEGRAM_API_BASE=http://127.0.0.1:8090` and `TWILIO_API_BASE=http://127.0.0.1:8090`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from infra.sandbox.telegram import TelegramSandbox, telegram_router
from infra.sandbox.twilio import TwilioSandbox, twilio_router

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(*, telegram: TelegramSandbox | None = None, twilio: TwilioSandbox | None = None) -> FastAPI:
    """The sandbox: the fake Telegram Bot API and Twilio Voice with their control APIs, the citizen page at `/`,
    and `/healthz`."""
    telegram = telegram or TelegramSandbox()
    twilio = twilio or TwilioSandbox()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await telegram.aclose()  # stop webhook deliveries and close their HTTP client
        await twilio.aclose()  # hang up the calls still running and close their HTTP client

    app = FastAPI(title="Shouhu sandbox", lifespan=lifespan,
                  description="Fake Telegram Bot API and Twilio Voice for local runs, demos, drills and tests.")
    app.state.telegram = telegram
    app.state.twilio = twilio
    app.include_router(telegram_router(telegram))
    app.include_router(twilio_router(twilio))
    app.mount("/sandbox/static", StaticFiles(directory=STATIC_DIR), name="sandbox-static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The page to play a citizen: chats, conversation, buttons, contacts; and phone calls."""
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "sandbox"}

    return app
