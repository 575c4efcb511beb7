"""Auto, resolved: the router's tier decision turned into a model of the catalog.

The one place that answers "which model does Auto send this to, and why": the
send and retry paths, POST /api/v1/route and `manage.py route` all call
`route_for_message`, so the routed_by line a reply carries is the line the
route API would have given for the same text.

Each tier resolves to a slug set by the operator (AUTO_CHEAP_MODEL,
AUTO_FLAGSHIP_MODEL); when that model has no key, another model of the same
tier answers, then the other tier, then the demo model, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from chat.errors import ModelUnavailable
from chat.models import ModelSpec
from chat.router import CHEAP, FLAGSHIP, RouteDecision, route_decide
from chat.selectors import models_catalog

TIERS = (CHEAP, FLAGSHIP)
# The largest context in the default catalog's tiers is 128K tokens, ~4 characters
# each: a longer text could not be sent to either tier anyway.
ROUTE_MAX_CHARS = 512_000
REASON_MAX_CHARS = 300  # Message.routed_by


@dataclass(frozen=True)
class Route:
    spec: ModelSpec
    tier: str  # the tier the router chose: "cheap" | "flagship" (even when a fallback answers)
    reason: str  # "Auto -> GPT-4o mini: classification or tagging (...)", stored as Message.routed_by
    category: str = ""  # the labelled kind of task the prompt is closest to, e.g. "debugging"


def configured_slug(tier: str) -> str:
    return settings.AUTO_FLAGSHIP_MODEL if tier == FLAGSHIP else settings.AUTO_CHEAP_MODEL


def tier_model(tier: str, models: Sequence[ModelSpec] | None = None) -> ModelSpec | None:
    """The model a tier stands for, available or not: its prices are what the tier costs.

    The configured slug first; else the catalog's first model marked with that tier.
    """
    models = list(models_catalog()) if models is None else list(models)
    slug = configured_slug(tier)
    for m in models:
        if m.slug == slug and not m.is_demo:
            return m
    return next((m for m in models if m.tier == tier and not m.is_demo), None)


def tier_of(spec: ModelSpec) -> str:
    """Which tier a model answered for: the configured slugs first, then the catalog's mark."""
    if spec.is_demo:
        return "demo"
    if spec.slug == settings.AUTO_CHEAP_MODEL:
        return CHEAP
    if spec.slug == settings.AUTO_FLAGSHIP_MODEL:
        return FLAGSHIP
    return spec.tier


def _pick(candidates: list[ModelSpec], tier: str) -> ModelSpec | None:
    slug = configured_slug(tier)
    in_tier = [m for m in candidates if not m.is_demo and (m.slug == slug or m.tier == tier)]
    in_tier.sort(key=lambda m: (m.slug != slug, m.sort_order, m.name))
    return in_tier[0] if in_tier else None


def auto_decide(*, content: str, history: Sequence[str] = ()) -> RouteDecision:
    """The router's tier for `content` after the texts earlier in its conversation.

    It runs the embedding model (milliseconds of CPU): callers decide before they
    open a transaction, so no row lock waits on it.
    """
    return route_decide(
        content=content,
        history_chars=sum(len(text) for text in history),
        history_messages=len(history),
        has_code_history=any("```" in text for text in history),
    )


def route_for_message(
    *, content: str, history: Sequence[str] = (), images: bool = False, decision: RouteDecision | None = None
) -> Route:
    """The model Auto sends `content` to, given the texts earlier in its conversation.

    Reads the catalog, writes nothing and calls no remote model: safe to call for a
    preview. `decision` is the router's, when the caller made it already (auto_decide).
    """
    decision = decision or auto_decide(content=content, history=history)
    catalog = list(models_catalog())
    candidates = [m for m in catalog if m.available and (m.image_input or not images)]
    wanted = tier_model(decision.tier, catalog)
    spec = _pick(candidates, decision.tier)
    note = ""
    if spec is not None and wanted is not None and spec != wanted:
        note = f" ({wanted.name} {_why_not(wanted, images)})"
    if spec is None:
        other = FLAGSHIP if decision.tier == CHEAP else CHEAP
        spec = _pick(candidates, other)
        note = f" (no {decision.tier}-tier model is available)"
    if spec is None:
        spec = next((m for m in candidates if m.is_demo), None)
        if any(m.available and not m.is_demo for m in catalog):
            note = " (no cheap- or flagship-tier model is available, so the demo model answers)"
        else:
            note = " (no provider key is set, so the demo model answers)"
    if spec is None:
        raise ModelUnavailable("No model is available for Auto right now.")
    reason = f"Auto -> {spec.name}: {decision.reason}{note}"
    return Route(spec=spec, tier=decision.tier, reason=reason[:REASON_MAX_CHARS], category=decision.category)


def _why_not(spec: ModelSpec, images: bool) -> str:
    if not spec.available:
        return "is temporarily unavailable"  # users never see the operator's reason
    if images and not spec.image_input:
        return "does not read images"
    return "is not in the catalog"


def tier_answerer(tier: str, models: Sequence[ModelSpec] | None = None) -> ModelSpec | None:
    """The model that answers a text message Auto sends to `tier`, with the fallbacks
    route_for_message uses (the chat page asks whether both tiers read images)."""
    catalog = list(models_catalog()) if models is None else list(models)
    candidates = [m for m in catalog if m.available]
    other = FLAGSHIP if tier == CHEAP else CHEAP
    return _pick(candidates, tier) or _pick(candidates, other) or next((m for m in candidates if m.is_demo), None)


def flagship_model(*, images: bool = False) -> ModelSpec | None:
    """The flagship-tier model that answers "Ask the flagship" now: the configured one, else another available one."""
    candidates = [m for m in models_catalog() if m.available and (m.image_input or not images)]
    return _pick(candidates, FLAGSHIP)
