"""Dependency aliases for the dispatcher's routes (one place, Annotated, as full-stack-fastapi-template does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.warnings.flows import IngestBatcher
from shared.auth.deps import require_roles
from shared.auth.service import Principal
from shared.clock import Clock


@dataclass
class Runtime:
    """What the routes need from the running app."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: PolicyStore
    clock: Clock
    batcher: IngestBatcher
    audit_key: bytes  # checks the audit chain and checkpoints (shared/audit/keys.py)


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per request.
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
IngestKey = Annotated[Principal, Depends(require_roles("ingest"))]
TaskReader = Annotated[Principal, Depends(require_roles("ingest", "operator", "officer", "supervisor"))]
FeedbackKey = Annotated[Principal, Depends(require_roles("operator", "officer", "supervisor"))]
SupervisorKey = Annotated[Principal, Depends(require_roles("supervisor"))]
# Field visits: officers (and grid workers) go; operators and supervisors may send them.
FieldKey = Annotated[Principal, Depends(require_roles("officer", "supervisor"))]
VisitRequester = Annotated[Principal, Depends(require_roles("operator", "supervisor"))]
