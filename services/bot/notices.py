"""One-off notices to a citizen's chat, such as the answer to a clue they reported (限时反馈).

The dispatcher queues a "bot.notice" job in the same transaction as the answer;
the bot sends it through the same limiter as alerts. Like alerts, a crash
between Telegram accepting the message and the job finishing sends it once
more (Telegram has no idempotency key); a blocked chat ends the job quietly.
"""

from __future__ import annotations

import structlog

from services.bot import texts
from services.bot.alerts import models as m
from services.bot.alerts.delivery import AlertSender
from shared import contracts
from shared.queue.service import ClaimedJob
from shared.queue.worker import PermanentJobError
from shared.sql import sql

log = structlog.get_logger(__name__)
KIND = contracts.SendNotice.KIND


class NoticeSender:
    def __init__(self, sender: AlertSender) -> None:
        self.sender = sender

    async def deliver(self, job: ClaimedJob) -> None:
        """The notice handler: the answer to a clue, in the chat's language, with the 96110 footer."""
        notice = contracts.SendNotice.of(job)
        chat_id = notice.chat_id
        async with self.sender.sessionmaker() as session:
            lang = (await session.execute(sql("SELECT lang FROM bot_chats WHERE chat_id = :c"),
                                          {"c": chat_id})).scalar_one_or_none()
        text = texts.t(notice.template, lang, ref=notice.ref, answer=notice.answer)
        outcome = await self.sender.send(chat_id, text)
        log.info("bot.notice", template="clue_answered", result=outcome.status, chat_id=chat_id)
        if outcome.status == m.FAILED:
            raise PermanentJobError(f"notice not delivered: {outcome.error}")
