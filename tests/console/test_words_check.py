"""The words check the browser walkthroughs rely on: it must catch codes and let words through."""

from tests.console.words import untranslated


def test_codes_are_caught_and_words_pass() -> None:
    """Outcomes, states, audit actions and missing catalogue keys are caught; Chinese, numbers and names are not."""
    text = "状态：loss_reported 已处置 task.created 打开 open 任务 Telegram 96110 desk.title 见 https://x.cn/a_b"
    assert untranslated(text) == ["desk.title", "loss_reported", "open", "task.created"]
    assert untranslated("高风险 · 待处置 · 剩余 1 小时 · 拨打 96110 核实 · Telegram") == []
