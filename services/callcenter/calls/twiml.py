"""The call's words and keypad (TwiML via twilio.twiml): warn, ask for one key, say what was recorded.

Keys: 1 = I understand (acknowledged), 2 = talk to an officer (the seats'
phones ring while the citizen holds: transfers.py), 3 = I already transferred
money (loss reported). Any other
key says so and asks again; silence repeats the question once, then the call
says goodbye and hangs up.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from twilio.twiml.voice_response import Gather, VoiceResponse

from shared.i18n import Catalog, lang_of

KEYS = {"1": "acknowledged", "2": "callback_requested", "3": "loss_reported"}
GATHER_TIMEOUT_S = 6


@lru_cache(maxsize=1)
def scripts() -> Catalog:
    return Catalog(Path(__file__).with_name("scripts.yaml"))


def _lang(lang: str | None) -> str:
    return lang_of(lang)


def _say(node: VoiceResponse | Gather, text: str, lang: str) -> None:
    voice = scripts().data["voice"][lang]
    node.say(text, language=voice["language"], voice=voice["voice"])


def warning_call(*, fraud_type: str, lang: str | None, action_url: str, silence_url: str,
                 first_round: bool = True) -> str:
    """The warning and the keypad question; `silence_url` is where Twilio goes when no key was pressed."""
    lang = _lang(lang)
    texts = scripts()
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=action_url, method="POST", timeout=GATHER_TIMEOUT_S)
    if first_round:
        warning = texts.text(f"warnings.{fraud_type}", lang, fallback="warnings.other")
        _say(gather, texts.text("intro", lang) + warning, lang)
    _say(gather, texts.text("menu", lang), lang)
    response.redirect(silence_url, method="POST")
    return str(response)


def ask_again(*, lang: str | None, action_url: str, silence_url: str, wrong_digit: bool) -> str:
    lang = _lang(lang)
    texts = scripts()
    response = VoiceResponse()
    if wrong_digit:
        _say(response, texts.text("wrong_digit", lang), lang)
    gather = response.gather(num_digits=1, action=action_url, method="POST", timeout=GATHER_TIMEOUT_S)
    _say(gather, texts.text("menu", lang), lang)
    response.redirect(silence_url, method="POST")
    return str(response)


def recorded(feedback: str, lang: str | None) -> str:
    """What the caller hears after a valid key: what was recorded, then the line closes."""
    lang = _lang(lang)
    response = VoiceResponse()
    _say(response, scripts().text(f"recorded.{feedback}", lang), lang)
    response.hangup()
    return str(response)


def goodbye(lang: str | None) -> str:
    lang = _lang(lang)
    response = VoiceResponse()
    _say(response, scripts().text("goodbye", lang), lang)
    response.hangup()
    return str(response)


def machine_message(lang: str | None) -> str:
    """An answering machine gets a short, general warning (no personal details) and the call ends."""
    lang = _lang(lang)
    response = VoiceResponse()
    _say(response, scripts().text("machine", lang), lang)
    response.hangup()
    return str(response)


def bridge(citizen: str, *, caller_id: str, lang: str | None, action_url: str) -> str:
    """Click-to-call: the seat picked up; connect them to the citizen, showing the 96110 caller ID."""
    lang = _lang(lang)
    response = VoiceResponse()
    _say(response, "正在接通市民。" if lang == "zh" else "Connecting you to the citizen.", lang)
    dial = response.dial(caller_id=caller_id, action=action_url, method="POST", timeout=30)
    dial.number(citizen)
    return str(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def transfer(*, lang: str | None, seats: list[tuple[str, str]] | tuple[tuple[str, str], ...], caller_id: str,
             action_url: str, leg_url: Callable[[str], str], ring_s: int, first: bool = True) -> str:
    """Key 2: (first) "please stay on the line", then every chosen seat's phone rings at once; the first to answer
    is bridged (Twilio hangs up the rest). Each leg reports when it is answered and when it ends."""
    lang = _lang(lang)
    response = VoiceResponse()
    if first:
        _say(response, scripts().text("transfer.connecting", lang), lang)
    dial = response.dial(caller_id=caller_id, action=action_url, method="POST", timeout=ring_s)
    for key_id, phone in seats:
        dial.number(phone, status_callback_event="answered completed", status_callback=leg_url(key_id),
                    status_callback_method="POST")
    return str(response)


def transfer_hold(*, lang: str | None, next_url: str, hold_s: int, say: bool) -> str:
    """Every seat is talking or ringing for someone else: hold a moment (said now and then), then look again."""
    lang = _lang(lang)
    response = VoiceResponse()
    if say:
        _say(response, scripts().text("transfer.hold", lang), lang)
    response.pause(length=hold_s)
    response.redirect(next_url, method="POST")
    return str(response)


def transfer_fallback(lang: str | None) -> str:
    """No seat picked up (or none was on duty): an officer calls back within 10 minutes; the call ends."""
    lang = _lang(lang)
    response = VoiceResponse()
    _say(response, scripts().text("transfer.call_back", lang), lang)
    response.hangup()
    return str(response)
