"""Campaigns on the wire: what a supervisor sends (validated, errors naming the field) and what comes back."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.dispatcher.warnings.schemas import FRAUD_TYPES
from shared.i18n import Catalog
from shared.web import Text

HERE = Path(__file__).parent
# Telegram takes 4,096 characters; a publicity message that needs more than a few lines is not read.
MAX_TEXT = 500
DEFAULT_DAYS = 90


@lru_cache(maxsize=1)
def message_templates() -> dict[str, Any]:
    """templates.yaml, checked once: every template has both languages and a title."""
    # Every text and title in both languages: checked by the catalogue as it loads.
    return Catalog(HERE / "templates.yaml").data


def compose(body: str, lang: str) -> str:
    """The message as sent: header, the body, and the footer that says how to verify (96110)."""
    data = message_templates()
    return f"{data['header'][lang]}{body.strip()}\n\n{data['footer'][lang]}"


class SegmentIn(BaseModel):
    """Who gets it. Every condition narrows; only chats bound to the bot and active are ever counted."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    region_prefix: str | None = Field(
        default=None, pattern=r"^[0-9]{0,6}$",
        description="Administrative division code prefix (33, 3301, 330106); inside your key's unit. "
                    "Default: your unit. A citizen's region is that of their latest warning.")
    age_min: int | None = Field(default=None, ge=0, le=130)
    age_max: int | None = Field(default=None, ge=0, le=130,
                                description="With an age band set, citizens whose age is unknown are left out.")
    fraud_types: list[Literal[FRAUD_TYPES]] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=len(FRAUD_TYPES),
        description="Citizens with a warning of one of these types received in the last `days` days; empty: any.")
    days: int = Field(default=DEFAULT_DAYS, ge=1, le=365)

    @field_validator("age_max")
    @classmethod
    def _band(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("age_min")
        if value is not None and low is not None and value < low:
            raise ValueError("must not be below age_min")
        return value

    @field_validator("fraud_types")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class CampaignIn(BaseModel):
    """A campaign to schedule: a segment, a template or an own text, and when (default: now)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [{
        "name": "老年人保健品提醒 (Xihu)", "segment": {"region_prefix": "330106", "age_min": 60},
        "template": "elderly_health"}]})

    name: Text = Field(min_length=1, max_length=100)
    segment: SegmentIn = Field(default_factory=SegmentIn)
    template: Text | None = Field(default=None, max_length=40, description="A key of GET /v1/campaigns/templates")
    text: Text | None = Field(default=None, max_length=MAX_TEXT, validate_default=True,
                             description="Your own text instead of a template; the 96110 line is added.")
    lang: Literal["zh", "en"] = Field(default="zh", description="The language of your own text")
    send_at: datetime | None = Field(default=None, description="Default: now. Naive times are Beijing time.")
    client_ref: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   description="Send the same ref again (a retry) and get the same campaign back.")

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value and value not in message_templates()["templates"]:
            raise ValueError(f"unknown template; one of: {', '.join(message_templates()['templates'])}")
        return value or None

    @field_validator("text")
    @classmethod
    def _one_message(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = (value or "").strip() or None
        if "template" not in info.data:
            return value  # the template itself was invalid: that error is enough
        if value and info.data["template"]:
            raise ValueError("give either a template or your own text, not both")
        if not value and not info.data["template"]:
            raise ValueError("must not be empty (or pick a template)")
        return value


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: SegmentIn = Field(default_factory=SegmentIn)


class PreviewOut(BaseModel):
    count: int = Field(description="Distinct bound, active chats the segment matches now")
    segment: dict[str, Any]


class TemplateOut(BaseModel):
    key: str
    title: dict[str, str]
    texts: dict[str, str] = Field(description="The full message per language, as it would be sent")


class Report(BaseModel):
    total: int
    sent: int
    failed: int
    blocked: int
    uncertain: int
    pending: int
    progress: float = Field(description="(sent + failed + blocked + uncertain) / total; 1.0 when nobody matched")
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Most frequent reasons, with counts")


class CampaignOut(BaseModel):
    campaign_id: uuid.UUID
    name: str
    unit: str
    status: str
    segment: dict[str, Any]
    template: str | None
    lang: str | None
    texts: dict[str, str]
    send_at: datetime
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    preview_count: int
    report: Report


class CampaignList(BaseModel):
    items: list[CampaignOut]
