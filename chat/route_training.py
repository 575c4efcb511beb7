"""Train the learned router on a labelled file and report on its held-out part.

The file is JSON lines: {"prompt": "...", "tier": "cheap" | "flagship",
"category": "..."}, with an optional "id" and "split". Rows without a split are
split by the rule fixed for Panels' own set (tests/data/route/README.md):
sha256 of the id (or of the prompt, without an id) -> 60% train, 20%
validation (regularisation and threshold), 20% test (the figures).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chat.pricing import TierPrices
from chat.route_metrics import RouterReport, evaluate
from chat.route_model import EMBEDDER, RouterWeights, data_digest, featurise, train

TIERS = ("cheap", "flagship")
SPLITS = ("train", "validation", "test")
# Regularisation strengths tried on the validation split; the threshold is the
# highest whose validation recall of flagship prompts reaches MIN_RECALL.
L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
MIN_RECALL = 0.96
MIN_ROWS_PER_TIER = 10


class LabelledDataError(ValueError):
    pass


@dataclass(frozen=True)
class LabelledPrompt:
    id: str
    prompt: str
    tier: str
    category: str
    split: str
    lang: str = ""


def split_of(key: str) -> str:
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "validation" if bucket < 80 else "test"


def load_labelled(path: Path) -> list[LabelledPrompt]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise LabelledDataError(f"line {number}: not JSON ({exc})") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
                raise LabelledDataError(f'line {number}: expected {{"prompt": "...", "tier": "cheap"|"flagship"}}')
            if item.get("tier") not in TIERS:
                raise LabelledDataError(f'line {number}: "tier" must be "cheap" or "flagship"')
            key = str(item.get("id") or item["prompt"])
            split = item.get("split") or split_of(key)
            if split not in SPLITS:
                raise LabelledDataError(f'line {number}: "split" must be one of {", ".join(SPLITS)}')
            rows.append(
                LabelledPrompt(
                    id=str(item.get("id") or number),
                    prompt=item["prompt"],
                    tier=item["tier"],
                    category=str(item.get("category") or item["tier"]),
                    split=split,
                    lang=str(item.get("lang") or ""),
                )
            )
    for split in ("train", "validation"):
        for tier in TIERS:
            count = sum(1 for r in rows if r.split == split and r.tier == tier)
            if count < MIN_ROWS_PER_TIER:
                raise LabelledDataError(
                    f"the {split} split has {count} {tier} prompts; at least {MIN_ROWS_PER_TIER} are needed"
                )
    return rows


@dataclass(frozen=True)
class TrainingResult:
    weights: RouterWeights
    l2: float
    validation: RouterReport
    test: RouterReport | None


def _tiers(rows: Sequence[LabelledPrompt]) -> np.ndarray:
    return np.array([r.tier == "flagship" for r in rows], dtype=float)


def report(
    weights: RouterWeights,
    rows: Sequence[LabelledPrompt],
    x: np.ndarray,
    *,
    cheap: TierPrices,
    flagship: TierPrices,
    threshold: float | None = None,
) -> RouterReport:
    threshold = weights.threshold if threshold is None else threshold
    predicted = ["flagship" if p >= threshold else "cheap" for p in weights.probability(x)]
    return evaluate(
        labels=[r.tier for r in rows],
        predicted=predicted,
        categories=[r.category for r in rows],
        cheap=cheap,
        flagship=flagship,
    )


def train_on(
    rows: Sequence[LabelledPrompt], *, cheap: TierPrices, flagship: TierPrices, min_recall: float = MIN_RECALL
) -> TrainingResult:
    embeddings, x = featurise([r.prompt for r in rows])
    part = {s: np.array([r.split == s for r in rows]) for s in SPLITS}
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "validation"]
    test_rows = [r for r in rows if r.split == "test"]
    y = _tiers(rows)
    best: tuple[float, float, RouterWeights] | None = None
    for l2 in L2_GRID:
        weights = train(
            x_train=x[part["train"]],
            y_train=y[part["train"]],
            x_val=x[part["validation"]],
            y_val=y[part["validation"]],
            embeddings_train=embeddings[part["train"]],
            categories_train=[r.category for r in train_rows],
            tiers_train=[r.tier for r in train_rows],
            l2=l2,
            min_recall=min_recall,
            meta=(
                f"{EMBEDDER}; trained on {len(train_rows)} prompts (data {data_digest([r.prompt for r in rows])}), "
                f"l2={l2}, threshold for validation flagship recall >= {min_recall:.0%}"
            ),
        )
        validation = report(weights, val_rows, x[part["validation"]], cheap=cheap, flagship=flagship)
        score = validation.saving.value
        if best is None or score > best[0]:
            best = (score, l2, weights)
    assert best is not None
    _, l2, weights = best
    return TrainingResult(
        weights=weights,
        l2=l2,
        validation=report(weights, val_rows, x[part["validation"]], cheap=cheap, flagship=flagship),
        test=report(weights, test_rows, x[part["test"]], cheap=cheap, flagship=flagship) if test_rows else None,
    )
