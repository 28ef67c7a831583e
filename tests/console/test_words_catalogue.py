"""The helpers that say codes in words (shared/console/web.py): known codes get their word, unknown ones a generic
word with the code kept on hover, never the bare code; and every vocabulary code has its word in the catalogue."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment

from shared.console import web
from shared.contracts import vocab
from shared.i18n import Catalog

ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR = Catalog(ROOT / "shared/console/messages.yaml", ROOT / "services/dispatcher/console/messages.yaml",
                     ROOT / "services/dispatcher/visits/messages.yaml")
DESK = Catalog(ROOT / "shared/console/messages.yaml", ROOT / "services/callcenter/console/messages.yaml")


class _Console:
    messages = SUPERVISOR


def render(source: str, lang: str = "zh", **values: object) -> str:
    env = Environment(autoescape=True)
    env.globals["word"] = web.word_global
    env.filters["actor"] = web.actor_filter
    return env.from_string(source).render(console=_Console, lang=lang, t=SUPERVISOR.translator(lang), **values)


def test_a_known_code_is_its_word_and_an_unknown_one_a_generic_word_with_the_code_on_hover() -> None:
    """`word('result', 'no_answer')` is 无人接听; a state from a later release shows 其他（未收录） titled with its code."""
    assert render("{{ word('result', 'no_answer') }}") == "无人接听"
    assert render("{{ word('result', 'no_answer') }}", "en") == "no answer"
    future = render("{{ word('result', 'teleported') }}")
    assert future == '<span class="code" title="teleported">其他（未收录）</span>'
    assert render("{{ word('result', none) }}").endswith(">其他（未收录）</span>")


def test_actors_are_people_and_words_with_the_recorded_actor_on_hover() -> None:
    """A key is its person's name; the citizen, a channel, the timers, a seat, a unit are words; an unknown kind
    of actor is 'someone else', never `seat:abc` or `robot:x`."""
    t = SUPERVISOR.translator("zh")
    assert web.actor_label("key:ab12cd34ef56:西湖坐席 李娜", t) == "西湖坐席 李娜"
    assert web.actor_label("citizen:telegram:4242", t) == "市民本人"
    assert web.actor_label("channel:auto_call", t) == "96110 自动语音外呼"
    assert web.actor_label("system:timer", t) == "系统定时任务"
    assert web.actor_label("system:bot", t) == "Telegram 机器人"
    assert web.actor_label("system:someday", t) == "系统"
    assert web.actor_label("seat:ab12cd34ef56", t) == "坐席"
    assert web.actor_label("unit:330106", t) == "单位 杭州市西湖区"
    assert web.actor_label("robot:x", t) == "其他操作者"
    assert web.actor_label(None, t) == "尚无人经办"
    assert render("{{ 'seat:ab12' | actor }}") == '<span class="actor" title="seat:ab12">坐席</span>'


def test_tiering_reasons_are_said_in_words() -> None:
    """The policy's reasons (signal, rule ids, effects) read as sentences; a rule without words keeps the policy's
    own description."""
    t = SUPERVISOR.translator("zh")
    assert web.reason_text({"rule": "signal", "effect": "high", "why": "signal transfer_in_progress suggests high"},
                           t) == "预警情形：正在转账（高）"
    assert web.reason_text({"rule": "vulnerable_age", "effect": "raise 1", "why": "people aged 65 or over"},
                           t) == "老年人或未成年人（上调 1 级）"
    assert web.reason_text({"rule": "large_amount", "effect": "at least high", "why": "x"}, t) == "涉案金额大（至少高风险）"
    assert web.reason_text({"rule": "local_rule", "effect": "raise 2", "why": "本地规则：春节前后"},
                           t) == "本地规则：春节前后（上调 2 级）"
    en = SUPERVISOR.translator("en")
    assert web.reason_text({"rule": "signal", "effect": "low", "why": "signal other suggests low"},
                           en) == "signal: other (low)"


def test_every_vocabulary_code_a_console_shows_has_its_words() -> None:
    """Tiers, outcomes, channels, channel results, citizens' answers, dispositions and signals: each code has a
    word in Chinese and English in the catalogue the consoles load (one place: shared/console/messages.yaml)."""
    from services.dispatcher.warnings.schemas import SIGNALS

    wanted = ([f"tier.{c}" for c in vocab.TIERS] + [f"outcome.{c}" for c in vocab.OUTCOMES]
              + [f"channel.{c}" for c in vocab.CHANNELS] + [f"result.{c}" for c in vocab.CHANNEL_RESULTS]
              + [f"feedback.{c}" for c in vocab.CITIZEN_FEEDBACK] + [f"signal.{c}" for c in SIGNALS])
    for catalog in (SUPERVISOR, DESK):
        assert [k for k in wanted if not catalog.has(k)] == []
    assert [f"dispo.{c}" for c in vocab.DISPOSITIONS if not DESK.has(f"dispo.{c}")] == []


def test_form_errors_are_said_in_the_readers_language() -> None:
    """pydantic's checks (required, too long, out of range, not a number, a form's own rule) read as words on a
    console; an unknown check says 'check this field', never pydantic's English."""
    from pydantic import BaseModel, Field, ValidationError, field_validator

    class Form(BaseModel):
        name: str = Field(min_length=1, max_length=5)
        age: int = Field(ge=0, le=130)
        band: int = 0

        @field_validator("band")
        @classmethod
        def _band(cls, value: int) -> int:
            if value < 0:
                raise ValueError("must not be below zero")
            return value

    t = SUPERVISOR.translator("zh")
    said = {}
    for data in ({"name": "", "age": 200, "band": -1}, {"name": "abcdefg", "age": "x"}, {"age": 1}):
        try:
            Form.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                said[(err["loc"][0], err["type"])] = web.form_error(err, t, value_errors={"must not be below": "none"})
    assert said == {("name", "string_too_short"): "此项必填。", ("age", "less_than_equal"): "不能大于 130。",
                    ("band", "value_error"): "暂无", ("name", "string_too_long"): "最多 5 个字符。",
                    ("age", "int_parsing"): "须为整数。", ("name", "missing"): "此项必填。"}
    unknown = {"type": "some_new_check", "msg": "Something new"}
    assert web.form_error(unknown, t) == "请检查此项。"
