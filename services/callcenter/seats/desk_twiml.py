"""What a desk-phone seat hears, and its keypad (TwiML via twilio.twiml): the menus, a task read out, the bridge.

Keys: at the menu 1 = the next task, 2 = pause, 0 = sign off, * = English/Chinese; on a task 1 = call the
citizen, 9 = hear it again; after the call a digit per disposition (1-6, the console's order; a callback then
asks for minutes, ended by #), 9 = hear the task again. Silence says the current menu again.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from twilio.twiml.voice_response import Gather, VoiceResponse

from services.callcenter.calls import twiml as call_twiml
from services.callcenter.seats.desk import DISPOSITION_KEYS, Home, Readout
from shared.i18n import Catalog, lang_of

GATHER_TIMEOUT_S = 10  # the operator may be writing a note: a little longer than a citizen's prompt
CALLBACK_DIGITS = 5  # minutes, up to MAX_CALLBACK_MIN
DIAL_TIMEOUT_S = 30
HERE = Path(__file__).parent
SHARED_CONSOLE = HERE.parents[2] / "shared" / "console" / "messages.yaml"
CONSOLE = HERE.parent / "console" / "messages.yaml"


@lru_cache(maxsize=1)
def texts() -> Catalog:
    """The desk phone's words, with the consoles' labels (tiers, fraud types, signals, dispositions)."""
    return Catalog(SHARED_CONSOLE, CONSOLE, HERE / "desk.yaml")


def _say(node: VoiceResponse | Gather, text: str, lang: str) -> None:
    voice = call_twiml.scripts().data["voice"][lang]
    node.say(text, language=voice["language"], voice=voice["voice"])


def _amount(value: Decimal) -> str:
    whole = value.to_integral_value()
    return f"{whole:f}" if whole == value else f"{value:f}"


def readout_text(task: Readout, lang: str) -> str:
    """The task in a few spoken sentences: emergency, tier, who, what, how much, time left."""
    t = texts()
    zh = lang == "zh"
    parts = [t.text("task.emergency", lang)] if task.emergency else []
    parts.append(t.text("task.tier", lang, tier=t.text(f"tier.{task.tier}", lang)))
    who = t.text("task.name", lang, name=task.name) if task.name else t.text("task.no_name", lang)
    if task.age is not None:
        who += t.text("task.age", lang, age=task.age)
    parts.append(who + t.text("task.number", lang, last4=" ".join(task.last4) if not zh else task.last4))
    parts.append(t.text("task.fraud", lang, fraud=t.text(f"fraud.{task.fraud_type}", lang, fallback="fraud.other")))
    if task.signals:
        labels = [t.text(f"signal.{s}", lang, fallback="signal.other") for s in task.signals]
        parts.append(t.text("task.signals", lang, signals=("、" if zh else ", ").join(labels)))
    if task.amount_at_risk:
        parts.append(t.text("task.amount", lang, amount=_amount(task.amount_at_risk)))
    left = task.minutes_left
    if left < 0:
        parts.append(t.text("task.overdue", lang, minutes=-left))
    elif left >= 60:
        hours, minutes = divmod(left, 60)
        parts.append(t.text("task.left_hours", lang, hours=hours, minutes=minutes) if minutes
                     else t.text("task.left_hours_only", lang, hours=hours))
    else:
        parts.append(t.text("task.left_minutes", lang, minutes=left))
    return ("" if zh else " ").join(parts)


def _joined(sentences: list[str], lang: str) -> str:
    """Sentences as one prompt: Chinese runs on after its full stops, English needs a space."""
    return ("" if lang == "zh" else " ").join(s for s in sentences if s)


def _gather(response: VoiceResponse, action_url: str, **options: object) -> Gather:
    return response.gather(action=action_url, method="POST", timeout=GATHER_TIMEOUT_S, **options)


def refused() -> str:
    """A number that is no seat's: said in Chinese, then English, and the line closes."""
    response = VoiceResponse()
    for lang in ("zh", "en"):
        _say(response, texts().text("refused", lang), lang)
    response.hangup()
    return str(response)


def present(home: Home, *, lang: str | None, menu_url: str, task_url: str, home_url: str,
            before: list[str] | tuple[str, ...] = ()) -> str:
    """Where the operator is: a held task read out with its keys, or the menu of their state; silence, again."""
    lang = lang_of(lang)
    t = texts()
    response = VoiceResponse()
    if home.task is not None:
        gather = _gather(response, task_url, num_digits=1)
        _say(gather, _joined([*before, readout_text(home.task, lang), t.text("task.menu", lang)], lang), lang)
    else:
        gather = _gather(response, menu_url, num_digits=1)
        menu = t.text(f"menu.{home.kind}", lang, seconds=home.wrap_up_left_s)
        _say(gather, _joined([*before, menu], lang), lang)
    response.redirect(home_url, method="POST")
    return str(response)


def dial(citizen: str, *, lang: str | None, caller_id: str, action_url: str, status_url: str) -> str:
    """Key 1 on a task: bridge the desk phone to the citizen, who sees the 96110 caller ID."""
    lang = lang_of(lang)
    response = VoiceResponse()
    _say(response, texts().text("connecting", lang), lang)
    d = response.dial(caller_id=caller_id, action=action_url, method="POST", timeout=DIAL_TIMEOUT_S)
    d.number(citizen, status_callback=status_url, status_callback_method="POST",
             status_callback_event="initiated ringing answered completed")
    return str(response)


def dispose_menu(*, lang: str | None, action_url: str, again_url: str, before: list[str] | tuple[str, ...] = (),
                 task: Readout | None = None) -> str:
    """After the call: a digit per disposition, 9 to hear the task again; silence, the same again."""
    lang = lang_of(lang)
    t = texts()
    items = [t.text("dispose.item", lang, label=t.text(f"dispo.{d}", lang), digit=k) for k, d in DISPOSITION_KEYS.items()]
    sep = "，" if lang == "zh" else ", "
    end = "。" if lang == "zh" else ". "
    menu = t.text("dispose.intro", lang) + sep.join(items) + end + t.text("dispose.again", lang)
    response = VoiceResponse()
    gather = _gather(response, action_url, num_digits=1)
    spoken = [*before, readout_text(task, lang) if task is not None else "", menu]
    _say(gather, _joined(spoken, lang), lang)
    response.redirect(again_url, method="POST")
    return str(response)


def ask_callback(*, lang: str | None, action_url: str, again_url: str, before: list[str] | tuple[str, ...] = ()) -> str:
    """A callback: in how many minutes, keyed and ended by #; silence goes back to the disposition menu."""
    lang = lang_of(lang)
    response = VoiceResponse()
    gather = _gather(response, action_url, num_digits=CALLBACK_DIGITS, finish_on_key="#")
    _say(gather, _joined([*before, texts().text("callback.ask", lang)], lang), lang)
    response.redirect(again_url, method="POST")
    return str(response)


def goodbye(text_key: str, lang: str | None) -> str:
    lang = lang_of(lang)
    response = VoiceResponse()
    _say(response, texts().text(text_key, lang), lang)
    response.hangup()
    return str(response)


def say(key: str, lang: str | None, **values: object) -> str:
    """One phrase of the desk's catalogue, to put before a menu."""
    return texts().text(key, lang_of(lang), **values)
