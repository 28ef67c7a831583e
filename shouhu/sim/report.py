"""The day's HTML report: one self-contained file (Chart.js inlined), in Chinese by default, English on request.

Chart.js 4.6.1 (MIT, `static/chart.js-LICENSE.md`) comes from the npm registry's `chart.js` package
(`dist/chart.umd.min.js`), vendored so that the report opens offline, from a file, on a duty officer's PC.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from shouhu.sim.figures import CAUSES, TARGETS, bottleneck

STATIC = Path(__file__).resolve().parent / "static"

TEXT = {
    "zh": {
        "title": "模拟一天：全省预警劝阻", "bottleneck": "瓶颈", "figures": "主要指标", "name": "指标", "value": "数值",
        "target": "目标", "in_time": "按时处置率（%）", "tiers": {"high": "高风险", "medium": "中风险", "low": "低风险"},
        "latency": "预警到首次联系尝试 / 首次人工接触（分钟）", "attempt50": "首次联系尝试 p50", "attempt95": "首次联系尝试 p95",
        "human50": "首次人工接触 p50", "human95": "首次人工接触 p95", "breaches": "超时任务：按区县与原因（前 15 个区县）",
        "occupancy": "坐席在岗与忙碌、人工外呼排队（全天）", "seats_on": "在岗坐席", "seats_busy": "忙碌坐席",
        "queued": "排队中的人工外呼", "hour": "时", "field": "见面处置、紧急止付", "visits_requested": "派发见面",
        "visits_completed": "完成见面", "emergencies": "紧急（已转账）", "stops_confirmed": "止付成功",
        "stops_failed": "止付失败", "notes": "说明（缩放与限速）", "met": "达到", "missed": "未达到",
        "labels": {"sim_high_in_time_pct": "高风险 2 小时内处置率（%）", "sim_medium_in_time_pct": "中风险 24 小时内处置率（%）",
                   "sim_low_in_time_pct": "低风险 72 小时内处置率（%）", "sim_first_attempt_p95_s": "高风险首次联系尝试 p95（秒）",
                   "sim_first_attempt_p95_real_s": "同上，本机实际秒数（÷ 时间倍数）",
                   "sim_first_human_p95_s": "高风险首次人工接触 p95（秒）", "sim_seat_occupancy": "坐席占用率",
                   "sim_breaches": "超时任务数", "sim_closed_unreachable": "以“无法联系/错号”结案", "sim_warnings_lost": "丢失预警数", "sim_warnings_sent": "发送预警数",
                   "sim_wall_s": "实际耗时（秒）"},
        "undecided": "中、低风险的期限长于模拟时长：只统计已办结或已到期的任务。",
    },
    "en": {
        "title": "A simulated day: the province's warnings", "bottleneck": "Bottleneck", "figures": "Figures",
        "name": "figure", "value": "value", "target": "target", "in_time": "Handled within the deadline (%)",
        "tiers": {"high": "high", "medium": "medium", "low": "low"},
        "latency": "Warning to first contact attempt / first human contact (minutes)", "attempt50": "first attempt p50",
        "attempt95": "first attempt p95", "human50": "first human contact p50", "human95": "first human contact p95",
        "breaches": "Breaches by district and cause (top 15 districts)",
        "occupancy": "Seats on duty and busy, operator calls waiting (over the day)", "seats_on": "seats on duty",
        "seats_busy": "seats busy", "queued": "operator calls waiting", "hour": "hour",
        "field": "Visits, emergencies and payment stops", "visits_requested": "visits requested",
        "visits_completed": "visits completed", "emergencies": "emergencies (money sent)",
        "stops_confirmed": "payment stops confirmed", "stops_failed": "payment stops failed",
        "notes": "Notes (scaling and limits)", "met": "met", "missed": "missed",
        "labels": {"sim_high_in_time_pct": "high tier handled within 2 h (%)",
                   "sim_medium_in_time_pct": "medium tier handled within 24 h (%)",
                   "sim_low_in_time_pct": "low tier handled within 72 h (%)",
                   "sim_first_attempt_p95_s": "high tier first contact attempt p95 (s)",
                   "sim_first_attempt_p95_real_s": "the same in real seconds on this machine (÷ time scale)",
                   "sim_first_human_p95_s": "high tier first human contact p95 (s)",
                   "sim_seat_occupancy": "seat occupancy", "sim_breaches": "breaches",
                   "sim_closed_unreachable": "closed as unreachable / wrong number",
                   "sim_warnings_lost": "warnings lost", "sim_warnings_sent": "warnings sent",
                   "sim_wall_s": "real time taken (s)"},
        "undecided": "Medium and low deadlines are longer than the run: only tasks closed or already due count.",
    },
}

TARGET_OF = {"sim_high_in_time_pct": (">=", TARGETS["high_in_time_pct"]),
             "sim_first_attempt_p95_s": ("<", TARGETS["first_attempt_p95_s"]),
             "sim_first_human_p95_s": ("<", TARGETS["first_human_p95_s"]),
             "sim_seat_occupancy": ("<=", TARGETS["seat_occupancy"]), "sim_warnings_lost": ("==", 0)}


def _met(op: str, value: float, target: float) -> bool:
    return {">=": value >= target, "<": value < target, "<=": value <= target, "==": value == target}[op]


def _minutes(value: float | None) -> float | None:
    return None if value is None else round(value / 60, 2)


def render(figures: dict[str, Any], samples: list[dict[str, Any]], notes: list[str], *, lang: str = "zh") -> str:
    """The report as one HTML document."""
    t = TEXT[lang]
    zh_line, en_line = bottleneck(figures, TARGETS)
    tiers = ("high", "medium", "low")
    rows = []
    for name, label in t["labels"].items():
        value = figures.get(name)
        target = TARGET_OF.get(name)
        verdict = ""
        if target and value is not None:
            verdict = f"{target[0]} {target[1]:g} · {t['met'] if _met(target[0], value, target[1]) else t['missed']}"
        rows.append(f"<tr><td>{html.escape(label)}</td><td class=num>{html.escape(str(value))}</td>"
                    f"<td>{html.escape(verdict)}</td></tr>")
    districts = list((figures.get("sim_breaches_by_district") or {}).items())[:15]
    causes = sorted({c for _, by in districts for c in by})
    cause_label = {c: CAUSES[c][0 if lang == "zh" else 1] for c in CAUSES}
    palette = ["#c0392b", "#e67e22", "#f1c40f", "#27ae60", "#2980b9", "#8e44ad", "#7f8c8d", "#16a085"]
    charts = {
        "in_time": {"type": "bar", "data": {"labels": [t["tiers"][x] for x in tiers], "datasets": [
            {"label": t["in_time"], "data": [figures.get(f"sim_{x}_in_time_pct") for x in tiers],
             "backgroundColor": ["#c0392b", "#e67e22", "#2980b9"]}]},
            "options": {"scales": {"y": {"min": 0, "max": 100}}}},
        "latency": {"type": "bar", "data": {"labels": [t["tiers"][x] for x in tiers], "datasets": [
            {"label": t[key], "backgroundColor": color,
             "data": [_minutes(figures.get(f"sim_{fig}_s_{x}")) for x in tiers]}
            for key, fig, color in (("attempt50", "first_attempt_p50", "#95a5a6"),
                                    ("attempt95", "first_attempt_p95", "#7f8c8d"),
                                    ("human50", "first_human_p50", "#5dade2"),
                                    ("human95", "first_human_p95", "#2471a3"))]}},
        "breaches": {"type": "bar", "data": {"labels": [d for d, _ in districts] or ["-"], "datasets": [
            {"label": cause_label[c], "backgroundColor": palette[i % len(palette)],
             "data": [by.get(c, 0) for _, by in districts]} for i, c in enumerate(causes)] or [
            {"label": cause_label["closed_late"], "data": [0]}]},
            "options": {"scales": {"x": {"stacked": True}, "y": {"stacked": True, "beginAtZero": True}}}},
        "occupancy": {"type": "line", "data": {"labels": [s["hour"] for s in samples], "datasets": [
            {"label": t["seats_on"], "data": [s["seats_on_duty"] for s in samples], "borderColor": "#7f8c8d",
             "pointRadius": 0, "yAxisID": "y"},
            {"label": t["seats_busy"], "data": [s["seats_busy"] for s in samples], "borderColor": "#c0392b",
             "pointRadius": 0, "yAxisID": "y"},
            {"label": t["queued"], "data": [s["queued_operator_calls"] for s in samples], "borderColor": "#2980b9",
             "pointRadius": 0, "yAxisID": "y1"}]},
            "options": {"scales": {"x": {"type": "linear", "title": {"display": True, "text": t["hour"]}},
                                   "y": {"beginAtZero": True, "position": "left"},
                                   "y1": {"beginAtZero": True, "position": "right",
                                          "grid": {"drawOnChartArea": False}}}}},
        "field": {"type": "bar", "data": {"labels": [t["visits_requested"], t["visits_completed"], t["emergencies"],
                                                     t["stops_confirmed"], t["stops_failed"]], "datasets": [
            {"label": t["field"], "backgroundColor": ["#2980b9", "#27ae60", "#c0392b", "#16a085", "#7f8c8d"],
             "data": [figures.get("sim_visits_requested", 0), figures.get("sim_visits_completed", 0),
                      figures.get("sim_emergencies", 0),
                      (figures.get("sim_payment_stops") or {}).get("confirmed", 0),
                      (figures.get("sim_payment_stops") or {}).get("failed", 0)]}]},
            "options": {"scales": {"y": {"beginAtZero": True}}}},
    }
    titles = {"in_time": t["in_time"], "latency": t["latency"], "breaches": t["breaches"],
              "occupancy": t["occupancy"], "field": t["field"]}
    sections = "\n".join(f'<section><h2>{html.escape(titles[k])}</h2><div class=chart>'
                         f'<canvas id="chart-{k}" role="img" aria-label="{html.escape(titles[k])}"></canvas>'
                         "</div></section>" for k in charts)
    library = (STATIC / "chart.umd.min.js").read_text(encoding="utf-8")
    config = json.dumps(charts, ensure_ascii=False).replace("</", "<\\/")
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in [*notes, t["undecided"]])
    return f"""<!doctype html>
<html lang="{'zh-CN' if lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(t['title'])}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", system-ui, sans-serif; margin: 1.5rem auto;
       max-width: 1000px; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
.bottleneck {{ font-size: 1.15rem; padding: .8rem 1rem; background: #fdf2e9; border-left: 5px solid #e67e22; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .8rem; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.chart {{ position: relative; height: 320px; }}
</style></head><body>
<h1>{html.escape(t['title'])}</h1>
<p class="bottleneck" id="bottleneck"><strong>{html.escape(t['bottleneck'])}{'：' if lang == 'zh' else ': '}</strong>
{html.escape(zh_line if lang == 'zh' else en_line)}</p>
<h2>{html.escape(t['figures'])}</h2>
<table id="figures"><tr><th>{html.escape(t['name'])}</th><th>{html.escape(t['value'])}</th>
<th>{html.escape(t['target'])}</th></tr>{''.join(rows)}</table>
{sections}
<h2>{html.escape(t['notes'])}</h2><ul>{note_items}</ul>
<script>{library}</script>
<script>
const configs = {config};
for (const [key, cfg] of Object.entries(configs)) {{
  cfg.options = Object.assign({{animation: false, responsive: true, maintainAspectRatio: false}}, cfg.options || {{}});
  new Chart(document.getElementById("chart-" + key), cfg);
}}
</script>
</body></html>
"""


def write(path: Path, figures: dict[str, Any], samples: list[dict[str, Any]], notes: list[str], *,
          lang: str = "zh") -> Path:
    path.write_text(render(figures, samples, notes, lang=lang), encoding="utf-8")
    return path
