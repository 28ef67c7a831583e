"""The contract between the services: job kinds, their typed payloads, the shared vocabularies, read functions.

Services meet only here and through the job queue (checked by import-linter):

    dispatcher  --SendAlert, StopAlerts-->            bot         --ChannelResult-->  dispatcher
    dispatcher  --PlaceCall, OperatorCall, StopCalls-->  callcenter  --ChannelResult-->  dispatcher
    dispatcher  --CampaignChunk-->        bot         --CampaignProgress--> dispatcher
    bot         --ClueReport-->           dispatcher  --SendNotice-->     bot

Each module below is one service's side: the jobs it consumes and the
functions through which it lets the others read its tables.
"""

from shared.contracts.base import JobPayload
from shared.contracts.bot import CampaignChunk, CampaignRecipient, SendAlert, SendNotice, StopAlerts
from shared.contracts.callcenter import OperatorCall, PlaceCall, StopCalls
from shared.contracts.contact import CallWindow, ContactRequest, ContactStop, next_call_time
from shared.contracts.dispatcher import (
    CampaignProgress,
    CampaignStart,
    ChannelResult,
    ClueReport,
    LossDetails,
    OpenEmergency,
    TaskBrief,
    TaskTimer,
    VisitClaimCheck,
    VisitRequest,
)
from shared.contracts.vocab import (
    BOT_QUEUE,
    CALL_CHANNELS,
    CALL_FAILURES,
    CALLCENTER_QUEUE,
    CHANNEL_RESULTS,
    CHANNELS,
    CITIZEN_FEEDBACK,
    DISPATCHER_QUEUE,
    DISPOSITION_OUTCOMES,
    DISPOSITIONS,
    NEVER_CLOSES_EMERGENCY,
    OUTCOMES,
    PRIORITY,
    TIERS,
    VISIT_FEEDBACK,
    VISIT_OUTCOMES,
    Channel,
    ChannelResultKind,
    CitizenFeedback,
    Disposition,
    Outcome,
    StopReason,
    Tier,
    VisitOutcome,
    front_of_tier,
)

__all__ = [
    "BOT_QUEUE", "CALLCENTER_QUEUE", "CALL_CHANNELS", "CALL_FAILURES", "CHANNELS", "CHANNEL_RESULTS",
    "CITIZEN_FEEDBACK", "DISPATCHER_QUEUE", "DISPOSITIONS", "DISPOSITION_OUTCOMES", "OUTCOMES", "PRIORITY", "TIERS",
    "NEVER_CLOSES_EMERGENCY", "VISIT_FEEDBACK", "VISIT_OUTCOMES",
    "CallWindow", "CampaignChunk", "CampaignProgress", "CampaignRecipient", "CampaignStart", "Channel",
    "ChannelResult", "ChannelResultKind", "CitizenFeedback", "ClueReport", "ContactRequest", "Disposition",
    "ContactStop", "JobPayload", "OperatorCall", "Outcome", "PlaceCall", "SendAlert", "SendNotice", "StopAlerts",
    "LossDetails", "OpenEmergency",
    "StopCalls", "StopReason", "TaskBrief", "TaskTimer", "Tier", "VisitClaimCheck", "VisitOutcome", "VisitRequest", "front_of_tier",
    "next_call_time",
]
