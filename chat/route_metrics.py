"""How well a router agrees with labelled prompts, and what it saves: figures with 95% intervals.

Saving: the reference task of chat/pricing.py (1,600 input + 500 output
tokens) on the 80/20 mix PRODUCT.md describes (80% of tasks are cheap-tier
work, 20% flagship work). The router sends a share of each kind to the
flagship (its false-positive rate and its recall); the saving is what that
costs against sending everything to the flagship, at the catalog's prices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chat.pricing import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, TierPrices, task_cost

MIX_CHEAP_SHARE = 0.8
BOOTSTRAP_ROUNDS = 2_000
Z95 = 1.959964


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"

    def as_dict(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


def wilson(successes: int, n: int) -> Interval:
    """Wilson score interval for a proportion (95%)."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mix_saving(*, flagship_rate_on_cheap: float, recall: float, cheap: TierPrices, flagship: TierPrices) -> float:
    """The saving against flagship-only on the 80/20 mix, given where the router sends each kind."""
    c = float(task_cost(input_tokens=DEFAULT_INPUT_TOKENS, output_tokens=DEFAULT_OUTPUT_TOKENS, prices=cheap))
    f = float(task_cost(input_tokens=DEFAULT_INPUT_TOKENS, output_tokens=DEFAULT_OUTPUT_TOKENS, prices=flagship))
    on_cheap_work = flagship_rate_on_cheap * f + (1 - flagship_rate_on_cheap) * c
    on_flagship_work = recall * f + (1 - recall) * c
    auto = MIX_CHEAP_SHARE * on_cheap_work + (1 - MIX_CHEAP_SHARE) * on_flagship_work
    return 1 - auto / f


@dataclass(frozen=True)
class RouterReport:
    n: int
    agreement: Interval
    flagship_recall: Interval
    cheap_kept: Interval  # share of cheap-labelled prompts kept on the cheap tier
    saving: Interval
    flagship_share_on_mix: float  # share of the 80/20 mix the router sends to the flagship
    by_category: dict[str, tuple[int, int]]  # category -> (agreed, total)

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "agreement": self.agreement.as_dict(),
            "flagship_recall": self.flagship_recall.as_dict(),
            "cheap_kept": self.cheap_kept.as_dict(),
            "saving_80_20": self.saving.as_dict(),
            "flagship_share_on_mix": round(self.flagship_share_on_mix, 4),
        }

    def lines(self) -> list[str]:
        return [
            f"prompts: {self.n}",
            f"agreement with the labels: {self.agreement}",
            f"flagship recall: {self.flagship_recall}",
            f"cheap prompts kept cheap: {self.cheap_kept}",
            f"saving vs flagship-only on the 80/20 mix: {self.saving}",
            f"share of the 80/20 mix sent to the flagship: {self.flagship_share_on_mix:.1%}",
        ]


def evaluate(
    *,
    labels: Sequence[str],
    predicted: Sequence[str],
    categories: Sequence[str],
    cheap: TierPrices,
    flagship: TierPrices,
    seed: int = 14,
) -> RouterReport:
    truth = np.array([label == "flagship" for label in labels])
    guess = np.array([p == "flagship" for p in predicted])
    agree = truth == guess
    hard, easy = truth, ~truth
    recall = wilson(int((guess & hard).sum()), int(hard.sum()))
    kept = wilson(int((~guess & easy).sum()), int(easy.sum()))

    def saving_of(guess_hard: np.ndarray, guess_easy: np.ndarray) -> float:
        return mix_saving(
            flagship_rate_on_cheap=float(guess_easy.mean()) if len(guess_easy) else 0.0,
            recall=float(guess_hard.mean()) if len(guess_hard) else 1.0,
            cheap=cheap,
            flagship=flagship,
        )

    on_hard, on_easy = guess[hard], guess[easy]
    point = saving_of(on_hard, on_easy)
    # Stratified bootstrap: resample the flagship and the cheap prompts separately, as the mix fixes their shares.
    rng = np.random.default_rng(seed)
    samples = [
        saving_of(rng.choice(on_hard, len(on_hard)), rng.choice(on_easy, len(on_easy))) for _ in range(BOOTSTRAP_ROUNDS)
    ]
    low, high = np.percentile(samples, [2.5, 97.5])
    by_category: dict[str, tuple[int, int]] = {}
    for category, ok in zip(categories, agree, strict=True):
        agreed, total = by_category.get(category, (0, 0))
        by_category[category] = (agreed + int(ok), total + 1)
    fpr = float(on_easy.mean()) if len(on_easy) else 0.0
    rec = float(on_hard.mean()) if len(on_hard) else 1.0
    return RouterReport(
        n=len(labels),
        agreement=wilson(int(agree.sum()), len(labels)),
        flagship_recall=recall,
        cheap_kept=kept,
        saving=Interval(point, float(low), float(high)),
        flagship_share_on_mix=MIX_CHEAP_SHARE * fpr + (1 - MIX_CHEAP_SHARE) * rec,
        by_category=by_category,
    )
