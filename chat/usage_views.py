"""The usage page: what a user spent, on which models and days, and what Auto saved.

Charts are inline SVG drawn here (no script, no CDN: the CSP allows neither);
each bar carries a <title>, and the same figures are in the tables below them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.humanize.templatetags.humanize import intcomma
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat.router import active_threshold
from chat.usage import DayUsage, ModelUsage, usage_report
from panels.money import credits_text, usd_text

SERIES_CLASSES = 6  # s0..s5 in figures.css; more models than that reuse colours
BAR_SLOT = 10  # viewBox units per day
BAR_WIDTH = 7
CHART_HEIGHT = 100
CHART_TOP = 4  # headroom above the tallest bar
MIN_BAR = 0.8  # a day with any spend stays visible


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    css: str
    title: str


def _stack(days: list[DayUsage], series: list[tuple[str, str]], value_of, label_of) -> tuple[list[Bar], int]:
    """Stacked bars, one column per day; `series` is (key, css class) bottom-up."""
    peak = max((sum(value_of(day, key) for key, _ in series) for day in days), default=0)
    bars: list[Bar] = []
    if peak <= 0:
        return bars, 0
    scale = (CHART_HEIGHT - CHART_TOP) / peak
    for i, day in enumerate(days):
        top = CHART_HEIGHT
        for key, css in series:
            value = value_of(day, key)
            if value <= 0:
                continue
            height = max(value * scale, MIN_BAR)
            top -= height
            bars.append(
                Bar(
                    x=i * BAR_SLOT + (BAR_SLOT - BAR_WIDTH) / 2,
                    y=round(top, 2),
                    height=round(height, 2),
                    css=css,
                    title=f"{day.date:%a %d %b}: {label_of(key, value)}",
                )
            )
    return bars, peak


def _charts(days: list[DayUsage], models: list[ModelUsage]) -> dict[str, Any]:
    legend = [
        {"name": m.name, "css": f"s{i % SERIES_CLASSES}", "slug": m.slug}
        for i, m in enumerate(models)
        if m.tally.credits
    ]
    names = {m.slug: m.name for m in models}
    spend_bars, spend_peak = _stack(
        days,
        [(entry["slug"], entry["css"]) for entry in legend],
        lambda day, slug: day.credits_by_model.get(slug, 0),
        lambda slug, value: f"{names.get(slug, slug)}, {credits_text(value)}",
    )
    token_bars, token_peak = _stack(
        days,
        [("input", "s-in"), ("output", "s-out")],
        lambda day, key: day.tally.input_tokens if key == "input" else day.tally.output_tokens,
        lambda key, value: f"{intcomma(value)} {key} tokens",
    )
    return {
        "width": len(days) * BAR_SLOT,
        "height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
        "legend": legend,
        "spend_bars": spend_bars,
        "spend_peak": credits_text(spend_peak) if spend_peak else "",
        "token_bars": token_bars,
        "token_peak": intcomma(token_peak) if token_peak else "",
        "mid_line": CHART_TOP + (CHART_HEIGHT - CHART_TOP) / 2,
        "top_line": CHART_TOP,
    }


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    report = usage_report(user=request.user)
    context: dict[str, Any] = {"report": report, "active_days": [d for d in reversed(report.days) if d.tally.messages]}
    if not report.empty:
        context["charts"] = _charts(report.days, report.models)
        context["total_usd"] = usd_text(report.total.usd)
        context["auto_messages"] = sum(share.messages for share in report.tier_shares)
        context["router_threshold"] = active_threshold()
        flagship = [t.percent for t in report.tier_shares if t.tier == "flagship"]
        context["flagship_share"] = flagship[0] if flagship else Decimal("0.0")
        context["models"] = [{"usage": m, "usd": usd_text(m.tally.usd)} for m in report.models]
        context["day_rows"] = [{"day": d, "usd": usd_text(d.tally.usd)} for d in context["active_days"]]
        offset = Decimal(0)
        context["tier_bar"] = []
        for share in report.tier_shares:
            context["tier_bar"].append({"share": share, "x": offset, "width": share.percent, "css": f"t-{share.tier}"})
            offset += share.percent
        if report.savings:
            s = report.savings
            context["savings"] = {
                "data": s,
                "actual": credits_text(s.actual_credits),
                "flagship": credits_text(s.flagship_credits),
                "saved_credits": intcomma(s.saved_credits),
                "saved_usd": usd_text(s.saved_usd),
            }
    return render(request, "chat/usage.html", context)
