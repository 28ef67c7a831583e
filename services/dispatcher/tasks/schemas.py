"""Tasks on the wire."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.web import Text

Outcome = Literal["acknowledged", "dissuaded", "loss_reported", "unreachable", "false_positive", "refused"]


class TaskEvent(BaseModel):
    at: datetime
    type: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict)
    seq: int


class PlanStepOut(BaseModel):
    step: str
    at: datetime
    done: bool


class TaskOut(BaseModel):
    task_id: uuid.UUID
    case_id: uuid.UUID
    tier: Literal["high", "medium", "low"]
    status: Literal["open", "in_progress", "closed"]
    due_at: datetime
    breached: bool
    outcome: str | None
    region_code: str
    fraud_type: str
    phone_masked: str
    created_at: datetime
    escalated_at: datetime | None
    emergency_at: datetime | None
    reached_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    policy_version: str
    attempts: dict[str, int]
    plan: list[PlanStepOut] = Field(default_factory=list)
    events: list[TaskEvent] = Field(default_factory=list)


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class FeedbackIn(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"outcome": "dissuaded",
                                                                           "note": "上门劝阻，已停止转账"}]}}

    outcome: Outcome
    note: Text | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    changed: bool
    action: str
    task: TaskOut


class ReassignIn(BaseModel):
    """Where a supervisor sends an escalated or breached task."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["seats", "unit"] = Field(description="seats: the seats of its unit call now; unit: hand it over")
    unit: str | None = Field(default=None, pattern=r"^([0-9]{2}|[0-9]{4}|[0-9]{6})$",
                             description="the unit taking it over (with to=unit), inside your own")
    note: Text | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _unit_with_unit(self) -> ReassignIn:
        if self.to == "unit" and not self.unit:
            raise ValueError("unit: required when to is 'unit'")
        return self
