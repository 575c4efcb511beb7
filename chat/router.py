"""The Auto router: pick the cheap or the flagship tier for one message.

A learned router (chat/route_model.py): a multilingual sentence embedding of
the request plus the structural signals (chat/route_signals.py) go into a
calibrated logistic regression that gives P(flagship). At or above the
threshold (settings.AUTO_ROUTER_THRESHOLD, else the one chosen when the weights
were trained) the flagship answers. The labels it learned from follow
PRODUCT.md's rule: explanation, nuance or multi-step reasoning go to the
flagship; pattern recognition, categorisation and templated output to the cheap tier.

The reason shown to users is the structural signal that fired (a stack trace, a
long document, a long-form request) or else the kind of task the prompt is
closest to in meaning, with the probability, so a user can see why Auto chose.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chat.route_model import Embedder, RouterWeights, features
from chat.route_signals import signals_of

CHEAP = "cheap"
FLAGSHIP = "flagship"
DEFAULT_WEIGHTS = Path(__file__).parent / "data" / "router_weights.npz"

CATEGORY_LABELS = {
    "faq_support": "templated support reply",
    "classification": "classification or tagging",
    "short_summary": "short summary",
    "code_boilerplate": "code boilerplate",
    "short_copy": "short copy",
    "translation": "translation",
    "factual_question": "short factual question",
    "multi_step_reasoning": "multi-step reasoning",
    "long_doc_synthesis": "long document synthesis",
    "explanation": "explanation or nuance",
    "creative_longform": "long-form writing",
    "debugging": "debugging",
    "architecture_review": "architecture or design review",
    "messy_extraction": "extraction from messy input",
}


@dataclass(frozen=True)
class RouteDecision:
    tier: str  # "cheap" | "flagship"
    reason: str  # one short line, shown to the user
    category: str = ""  # the labelled category closest in meaning, e.g. "debugging"
    probability: float | None = None  # P(flagship), calibrated


def category_label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category.replace("_", " "))


_weights_lock = threading.Lock()
_weights: dict[Path, RouterWeights] = {}


def weights_path() -> Path:
    try:
        from django.conf import settings

        configured = getattr(settings, "AUTO_ROUTER_WEIGHTS", "") if settings.configured else ""
    except ImportError:  # pragma: no cover - Django is always installed with the app
        configured = ""
    return Path(configured) if configured else DEFAULT_WEIGHTS


def configured_threshold() -> float | None:
    try:
        from django.conf import settings

        return getattr(settings, "AUTO_ROUTER_THRESHOLD", None) if settings.configured else None
    except ImportError:  # pragma: no cover
        return None


def active_threshold() -> float:
    """The P(flagship) at or above which Auto picks the flagship now: the operator's setting, else the trained one."""
    configured = configured_threshold()
    return router_weights().threshold if configured is None else configured


def router_weights(path: Path | None = None) -> RouterWeights:
    """The classifier's weights, read once per process per file."""
    path = path or weights_path()
    if path not in _weights:
        with _weights_lock:
            if path not in _weights:
                _weights[path] = RouterWeights.load(path)
    return _weights[path]


def warm() -> float:
    """Load the embedding model and the weights now (web start-up); returns the seconds it took."""
    router_weights()
    Embedder.get()
    return Embedder.load_seconds or 0.0


def route_decide(
    *,
    content: str,
    history_chars: int = 0,
    history_messages: int = 0,
    has_code_history: bool = False,
    weights: RouterWeights | None = None,
    threshold: float | None = None,
) -> RouteDecision:
    """Decide the tier for one user message in its conversation.

    history_chars counts towards the document's size: a follow-up can ask to
    synthesise what was pasted earlier. history_messages and has_code_history
    are accepted for the callers' sake and not used by the learned model.
    """
    weights = weights or router_weights()
    if threshold is None:
        threshold = configured_threshold()
    if threshold is None:
        threshold = weights.threshold
    signals = signals_of(content, history_chars=history_chars)
    embedding = Embedder.encode([content])
    probability = float(weights.probability(features(embedding, [signals]))[0])
    tier = FLAGSHIP if probability >= threshold else CHEAP
    category = weights.nearest_category(np.asarray(embedding[0]), tier)
    structural = signals.reason() if tier == FLAGSHIP else None
    label = structural or category_label(category)
    return RouteDecision(
        tier=tier,
        reason=f"{label} (flagship likelihood {probability:.0%})",
        category=category,
        probability=probability,
    )
