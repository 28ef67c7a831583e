"""The words the services share: tiers, channels, outcomes, citizens' answers, dispositions, results, priorities.

Each vocabulary is written once here, as a `Literal` type (for payloads and
API schemas) and as a tuple (for loops, checks and SQL); nothing else in the
project spells these lists out.
"""

from __future__ import annotations

from typing import Literal, get_args

# ---- queues: who consumes the jobs on each -----------------------------------------------------------
DISPATCHER_QUEUE = "dispatcher"
BOT_QUEUE = "bot"
CALLCENTER_QUEUE = "callcenter"

# ---- risk tiers ---------------------------------------------------------------------------------------
Tier = Literal["high", "medium", "low"]
TIERS: tuple[str, ...] = get_args(Tier)

# ---- contact channels of a task's plan ----------------------------------------------------------------
# bot_alert: a Telegram alert (bot); auto_call: an automated 96110 voice call (callcenter);
# operator_call: a seat operator calls (callcenter); visit: officers or grid workers go in person (dispatcher).
Channel = Literal["bot_alert", "auto_call", "operator_call", "visit"]
CHANNELS: tuple[str, ...] = get_args(Channel)
CALL_CHANNELS: tuple[str, ...] = ("auto_call", "operator_call")

# ---- how a task closes its loop -----------------------------------------------------------------------
Outcome = Literal["acknowledged", "dissuaded", "loss_reported", "unreachable", "false_positive", "refused"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

# An emergency (a loss reported: money already sent) is never closed as these: nothing is left to dissuade.
# It closes when its payment stop ends (the dispatcher's emergencies); a channel checks first to answer at once.
NEVER_CLOSES_EMERGENCY: tuple[str, ...] = ("acknowledged", "dissuaded")

# ---- what an officer or grid worker reports after a field visit (见面处置), and the task outcome each means ----
# None: nobody was found; the task stays open and goes on to a supervisor.
VisitOutcome = Literal["dissuaded", "loss_reported", "not_found", "refused", "false_positive"]
VISIT_OUTCOMES: tuple[str, ...] = get_args(VisitOutcome)
VISIT_FEEDBACK: dict[str, str | None] = {
    "dissuaded": "dissuaded", "loss_reported": "loss_reported", "not_found": None, "refused": "refused",
    "false_positive": "false_positive",
}

# ---- what a citizen can answer on a channel (Telegram buttons, keypad digits) ---------------------------
CitizenFeedback = Literal["acknowledged", "loss_reported", "callback_requested", "not_me"]
CITIZEN_FEEDBACK: tuple[str, ...] = get_args(CitizenFeedback)

# ---- what a seat operator records after a call, and the task outcome each means (None: stays open) -----
# unreachable / wrong_number: the phone did not reach the citizen, so the task stays open and officers go (the
# dispatcher requests the visit at once); only a person closes a task as `unreachable`, on the feedback route.
Disposition = Literal["dissuaded", "loss_reported", "unreachable", "wrong_number", "refused", "callback"]
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)
DISPOSITION_OUTCOMES: dict[str, str | None] = {
    "dissuaded": "dissuaded", "loss_reported": "loss_reported", "unreachable": None,
    "wrong_number": None, "refused": "refused", "callback": None,
}

# ---- what happened on a channel, as the bot and the callcenter report it back ---------------------------
ChannelResultKind = Literal[
    # the bot
    "delivered",    # Telegram took the alert
    "no_channel",   # no bound chat for this phone
    "blocked",      # the citizen blocked the bot
    # a person answered (a call picked up, a button or key pressed)
    "answered", "pressed",
    # automated calls
    "busy", "no_answer", "machine", "canceled",
    "do_not_call",  # the number is on the do-not-call list: not dialled
    "capped",       # too many calls to this number in 24 h: not dialled
    "operator_required",  # the number's country may not get automated calls (CALLCENTER_AUTODIAL_COUNTRIES):
                          # not dialled; a person must call
    # either
    "failed",
    # a seat operator's disposition (see Disposition)
    "disposition",
    # the channel itself stopped the contact because the dispatcher said so (StopCalls): never retried
    "stopped",
]
CHANNEL_RESULTS: tuple[str, ...] = get_args(ChannelResultKind)
# Automated-call results after which the playbook retries (busy sooner than no answer).
CALL_FAILURES: tuple[str, ...] = ("busy", "no_answer", "machine", "failed", "canceled")

# ---- job priorities: lower runs first; within a tier, the earlier deadline ------------------------------
PRIORITY: dict[str, int] = {
    "emergency": 0,       # money already sent: beats everything
    "citizen_waiting": 1,  # a citizen pressed 2 for an officer and no seat picked up: call back first
    "stop": 1,            # stop contacting a citizen who answered (cancel a ringing robocall)
    "timer": 5,           # a task's plan step
    "result": 5,          # a channel's result coming back to the dispatcher
    "high": 10, "medium": 50,
    "notice": 60,         # a one-off message to a citizen (a clue's answer): behind alerts, ahead of publicity
    "low": 90,
    "campaign_start": 150,
    "campaign_send": 200,  # publicity: after every alert
}


def front_of_tier(tier: str) -> int:
    """A priority ahead of every other job of the tier (a citizen asked to be called back by a person)."""
    return PRIORITY[tier] - 1


# Why the dispatcher tells the channels to stop contacting a citizen (StopAlerts, StopCalls).
StopReason = Literal["closed", "not_me", "callback_requested", "loss_reported"]
