"""The callcenter service's settings."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class CallcenterSettings(CommonSettings):
    host: str = Field(default="127.0.0.1", alias="SHOUHU_CALLCENTER_HOST")
    port: int = Field(default=8002, alias="SHOUHU_CALLCENTER_PORT")
    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(default=None, alias="TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = Field(default=None, alias="TWILIO_FROM_NUMBER")
    twilio_api_base: str = Field(default="https://api.twilio.com", alias="TWILIO_API_BASE")
    public_url: str = Field(default="http://127.0.0.1:8002", alias="CALLCENTER_PUBLIC_URL")
