"""The callcenter's settings (TWILIO_* and CALLCENTER_PUBLIC_URL as in the contract)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from shared.settings import CommonSettings


class CallcenterSettings(CommonSettings):
    host: str = Field(default="127.0.0.1", alias="SHOUHU_CALLCENTER_HOST")
    port: int = Field(default=8002, alias="SHOUHU_CALLCENTER_PORT")
    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(default=None, alias="TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = Field(default=None, alias="TWILIO_FROM_NUMBER")
    # Unset: Twilio itself, or the local sandbox when no credentials are set either.
    twilio_api_base: str | None = Field(default=None, alias="TWILIO_API_BASE")
    # Twilio calls back here, and signs its requests over this URL (rebuilt as Twilio saw it behind proxies).
    public_url: str = Field(default="http://127.0.0.1:8002", alias="CALLCENTER_PUBLIC_URL")
    sandbox_url: str = Field(default="http://127.0.0.1:8090", alias="SHOUHU_SANDBOX_URL")
    # Pacing: Twilio's default is 1 new call per second per account (it queues the rest); pace ourselves, every
    # replica together (calls/pacing.py).
    calls_per_s: float = Field(default=1.0, alias="SHOUHU_CALLS_PER_S")
    # At most this many automated calls to one number in 24 hours, whatever the playbooks ask.
    daily_attempt_cap: int = Field(default=6, alias="SHOUHU_DAILY_CALL_CAP")
    # Key 2 (calls/transfers.py): how many seats' phones ring at once for a citizen (Twilio allows 10 per Dial),
    # and for how long before the citizen is told an officer will call back (the issue: 60 s).
    transfer_ring_seats: int = Field(default=3, ge=1, le=10, alias="SHOUHU_TRANSFER_RING_SEATS")
    transfer_ring_s: int = Field(default=60, ge=5, le=600, alias="SHOUHU_TRANSFER_RING_S")
    # Seat wrap-up: after a disposition the seat rests this long before it takes work again (no claim, no key-2
    # ring) unless the operator ends it early (PUT /v1/seat available, or key 1 on a desk phone). 0: straight back.
    seat_wrap_up_s: int = Field(default=30, ge=0, le=3600, alias="SHOUHU_SEAT_WRAP_UP_S")
    # Countries (ISO 3166 codes, comma-separated; "*" for all) whose numbers may get automated calls. Others are
    # stored and shown, but only a seat operator calls them: a robocall in Chinese to a number abroad is more
    # likely to frighten or confuse than to help, and international calls cost (issue 11).
    autodial_countries: str = Field(default="CN", alias="CALLCENTER_AUTODIAL_COUNTRIES")
    run_worker: bool = Field(default=True, alias="SHOUHU_CALLCENTER_WORKER")
    worker_concurrency: int = Field(default=16, alias="SHOUHU_CALLCENTER_WORKER_CONCURRENCY")
    worker_poll_interval_s: float = Field(default=1.0, alias="SHOUHU_WORKER_POLL_INTERVAL_S")
    # Job leases: short, so a crashed worker's jobs run elsewhere within ~lease + 2.5 s; heartbeats
    # (every lease/3) keep a long job's lease alive. On stop, running jobs get the grace, then are
    # released back to the queue in their place.
    worker_lease_s: float = Field(default=10.0, alias="SHOUHU_WORKER_LEASE_S")
    worker_grace_s: float = Field(default=8.0, alias="SHOUHU_WORKER_GRACE_S")
    # Reconciliation with Twilio (calls/reconcile.py): how often attempts whose end never reached us are looked
    # up, and when an attempt counts as overdue: the ring timeout we give Twilio, plus the longest script (the
    # warning, two Gathers, a key-2 transfer ringing the seats), plus a margin for callbacks still on their way.
    # Unset: reconcile where the worker runs (tests that run jobs by hand drive the reconciler by hand too).
    run_reconciler: bool | None = Field(default=None, alias="SHOUHU_CALLCENTER_RECONCILER")
    reconcile_interval_s: float = Field(default=30.0, gt=0, alias="SHOUHU_RECONCILE_INTERVAL_S")
    ring_timeout_s: int = Field(default=30, ge=5, le=600, alias="SHOUHU_CALL_RING_TIMEOUT_S")
    longest_script_s: int = Field(default=150, ge=0, alias="SHOUHU_CALL_LONGEST_SCRIPT_S")
    reconcile_margin_s: int = Field(default=30, ge=0, alias="SHOUHU_RECONCILE_MARGIN_S")
    # Twilio lookups at once during a sweep (Twilio's REST API allows 100 concurrent requests per account).
    reconcile_concurrency: int = Field(default=8, ge=1, le=100, alias="SHOUHU_RECONCILE_CONCURRENCY")
    # The whole create-call request, retries and pacing included, is abandoned after this; a rerun that finds the
    # attempt reserved without a call sid asks Twilio only once this (plus a margin for Twilio to list the call)
    # has passed since the dial began, so it never races a create request still in flight.
    dial_deadline_s: float = Field(default=90.0, gt=0, alias="SHOUHU_CALL_DIAL_DEADLINE_S")
    dial_settle_s: float = Field(default=15.0, ge=0, alias="SHOUHU_CALL_DIAL_SETTLE_S")

    # The Twilio sandbox's default account (infra/sandbox/twilio.py) and a 96110-style caller ID.
    SANDBOX_ACCOUNT_SID: ClassVar[str] = "AC" + "5a" * 16
    SANDBOX_AUTH_TOKEN: ClassVar[str] = "sandbox-auth-token"
    SANDBOX_FROM_NUMBER: ClassVar[str] = "+8657196110"

    @field_validator("autodial_countries")
    @classmethod
    def _country_codes(cls, value: str) -> str:
        entries = [c.strip() for c in value.split(",") if c.strip()]
        bad = [c for c in entries if c != "*" and not (len(c) == 2 and c.isascii() and c.isalpha())]
        if bad:
            raise ValueError(f"CALLCENTER_AUTODIAL_COUNTRIES: {', '.join(bad)} is not a 2-letter country code")
        return ",".join(c.upper() for c in entries)

    def autodial_regions(self) -> frozenset[str]:
        """The country codes whose numbers may be dialled automatically ("*": any)."""
        return frozenset(self.autodial_countries.split(",")) - {""}

    def reconciles(self) -> bool:
        return self.run_worker if self.run_reconciler is None else self.run_reconciler

    def expected_call_s(self) -> float:
        """How long an automated call can last, ringing and script included: unfinished after this is overdue."""
        return self.ring_timeout_s + self.longest_script_s + self.transfer_ring_s + self.reconcile_margin_s

    def dial_in_flight_s(self) -> float:
        """After this long since a dial began, no create request for it can still be on its way to Twilio."""
        return self.dial_deadline_s + self.dial_settle_s

    @property
    def sandbox(self) -> bool:
        return not (self.twilio_account_sid and self.twilio_auth_token)

    def account_sid(self) -> str:
        return self.twilio_account_sid or self.SANDBOX_ACCOUNT_SID

    def auth_token(self) -> str:
        return self.twilio_auth_token or self.SANDBOX_AUTH_TOKEN

    def from_number(self) -> str:
        return self.twilio_from_number or self.SANDBOX_FROM_NUMBER

    def api_base(self) -> str:
        if self.twilio_api_base:
            return self.twilio_api_base
        return self.sandbox_url if self.sandbox else "https://api.twilio.com"
