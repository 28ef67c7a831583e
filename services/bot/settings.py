"""The bot service's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import CommonSettings


class BotSettings(CommonSettings):
    host: str = Field(default="127.0.0.1", alias="SHOUHU_BOT_HOST")
    port: int = Field(default=8001, alias="SHOUHU_BOT_PORT")
    telegram_bot_token: str | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    # Unset: Telegram itself, or the local sandbox when no token is set either (see api_base()).
    telegram_api_base: str | None = Field(default=None, alias="TELEGRAM_API_BASE")
    telegram_webhook_url: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
    sandbox_url: str = Field(default="http://127.0.0.1:8090", alias="SHOUHU_SANDBOX_URL")
    # Long polling for updates (when no webhook URL is set); tests switch it off.
    polling: bool = Field(default=True, alias="SHOUHU_BOT_POLLING")
    # Long polling is led by one replica at a time (a PostgreSQL advisory lock): the others try to take the
    # lock this often, and the leader checks its lock's connection as often.
    polling_leader_retry_s: float = Field(default=5.0, alias="SHOUHU_BOT_POLLING_LEADER_RETRY_S")
    # Run the alert-delivery worker in this process.
    run_worker: bool = Field(default=True, alias="SHOUHU_BOT_WORKER")
    worker_concurrency: int = Field(default=64, alias="SHOUHU_BOT_WORKER_CONCURRENCY")
    worker_poll_interval_s: float = Field(default=1.0, alias="SHOUHU_WORKER_POLL_INTERVAL_S")
    # Job leases: short, so a crashed worker's jobs run elsewhere within ~lease + 2.5 s; heartbeats
    # (every lease/3) keep a long job's lease alive. On stop, running jobs get the grace, then are
    # released back to the queue in their place.
    worker_lease_s: float = Field(default=10.0, alias="SHOUHU_WORKER_LEASE_S")
    worker_grace_s: float = Field(default=8.0, alias="SHOUHU_WORKER_GRACE_S")
    # Telegram's limits (about 30 messages/s per bot, 1 per chat per second, 20 a minute per group), kept by every
    # replica together through the database (alerts/limiter.py): these are the bot's, not one replica's.
    global_per_s: float = Field(default=30, alias="SHOUHU_BOT_GLOBAL_PER_S")
    per_chat_interval_s: float = Field(default=1.0, alias="SHOUHU_BOT_PER_CHAT_INTERVAL_S")
    group_per_min: float = Field(default=20, gt=0, alias="SHOUHU_BOT_GROUP_PER_MIN")
    # A replica that dies holding a sending token or a chat's turn frees it this long after its last heartbeat.
    send_lease_s: float = Field(default=6.0, gt=0, alias="SHOUHU_BOT_SEND_LEASE_S")
    # A dialogue (/report) untouched this long reads as finished, and the sweep deletes it.
    dialogue_ttl_s: float = Field(default=24 * 3600.0, alias="SHOUHU_BOT_DIALOGUE_TTL_S")

    # Without a real token the bot talks to the sandbox with this one (any token the sandbox accepts).
    SANDBOX_TOKEN: ClassVar[str] = "1000000001:SHOUHUsandboxTOKENforLOCALuse0000000"

    @property
    def sandbox(self) -> bool:
        return not self.telegram_bot_token

    def token(self) -> str:
        return self.telegram_bot_token or self.SANDBOX_TOKEN

    def bot_id(self) -> int:
        """The bot's id, the token's first part: the limits are the bot's, whichever replica sends."""
        head = self.token().split(":", 1)[0]
        return int(head) if head.isdigit() else 0

    def api_base(self) -> str:
        if self.telegram_api_base:
            return self.telegram_api_base
        return self.sandbox_url if self.sandbox else "https://api.telegram.org"
