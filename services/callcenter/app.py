"""The callcenter service (96110 outbound calls and the seat-operator API).

Issue #4 builds the Twilio calls, the operator API and the Twilio sandbox;
until then the service runs with health, readiness and metrics only, and the
dispatcher's "call.*" jobs wait in the queue for it.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.callcenter.settings import CallcenterSettings
from shared.service_app import create_service_app


def create_app(settings: CallcenterSettings | None = None) -> FastAPI:
    return create_service_app("callcenter", settings or CallcenterSettings(), title="Shouhu callcenter",
                              description="96110 outbound calls (not yet calling: see issue #4).")
