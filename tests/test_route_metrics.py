"""The router's figures: Wilson intervals, the 80/20 saving and its bootstrap interval."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chat.pricing import TierPrices
from chat.route_metrics import evaluate, mix_saving, wilson

CHEAP = TierPrices("GPT-4o mini", Decimal("0.15"), Decimal("0.60"))
FLAGSHIP = TierPrices("GPT-4o", Decimal("5.00"), Decimal("15.00"))


def test_wilson_matches_the_textbook_values():
    # 81 of 100: 0.81 with the Wilson 95% interval [0.7222, 0.8749] (Newcombe 1998, method 3).
    interval = wilson(81, 100)
    assert interval.value == pytest.approx(0.81)
    assert interval.low == pytest.approx(0.7222, abs=5e-4)
    assert interval.high == pytest.approx(0.8749, abs=5e-4)
    assert wilson(10, 10).high == pytest.approx(1.0) and wilson(0, 10).low == pytest.approx(0.0)


def test_a_perfect_router_saves_the_cheap_share_of_the_price_gap():
    # 1,600 in + 500 out: $0.00054 on the cheap tier, $0.0155 on the flagship.
    perfect = mix_saving(flagship_rate_on_cheap=0.0, recall=1.0, cheap=CHEAP, flagship=FLAGSHIP)
    assert perfect == pytest.approx(0.8 * (1 - 0.00054 / 0.0155))
    assert mix_saving(flagship_rate_on_cheap=1.0, recall=1.0, cheap=CHEAP, flagship=FLAGSHIP) == pytest.approx(0.0)
    all_cheap = mix_saving(flagship_rate_on_cheap=0.0, recall=0.0, cheap=CHEAP, flagship=FLAGSHIP)
    assert all_cheap == pytest.approx(1 - 0.00054 / 0.0155)


def test_evaluate_counts_agreement_recall_and_saving():
    labels = ["cheap"] * 8 + ["flagship"] * 4
    predicted = ["cheap"] * 7 + ["flagship"] + ["flagship"] * 3 + ["cheap"]
    report = evaluate(labels=labels, predicted=predicted, categories=["x"] * 12, cheap=CHEAP, flagship=FLAGSHIP)
    assert report.agreement.value == pytest.approx(10 / 12)
    assert report.flagship_recall.value == pytest.approx(3 / 4)
    assert report.cheap_kept.value == pytest.approx(7 / 8)
    expected = mix_saving(flagship_rate_on_cheap=1 / 8, recall=3 / 4, cheap=CHEAP, flagship=FLAGSHIP)
    assert report.saving.value == pytest.approx(expected)
    assert report.saving.low <= expected <= report.saving.high
    assert report.flagship_share_on_mix == pytest.approx(0.8 / 8 + 0.2 * 3 / 4)
    assert report.by_category == {"x": (10, 12)}
