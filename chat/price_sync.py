"""Prices and context windows from the installed `genai-prices` dataset (offline).

`catalog_diff` compares each catalog model with the dataset's entry for its provider and
upstream id, at a given moment (prices with a start date apply from that date);
`catalog_apply` writes the differences. Self-hosted models and the demo are not in the
dataset and are left alone. Tiers follow genai-prices' cliff rule: above a tier's start
(input tokens), all of the request's tokens pay that tier's rates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from typing import Any

from django.db import transaction

from chat.models import ModelSpec

# The dataset's provider id for each adapter.
DATASET_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "mistral": "mistral"}
SYNCED_FIELDS = ("input_price", "output_price", "price_tiers", "context_window")


@dataclass(frozen=True)
class Change:
    slug: str
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.slug}: {self.field} {self.old!r} -> {self.new!r}"


def _rate_at(price: Any, tokens_above: int) -> Decimal:
    """The rate of a (possibly tiered) price for a prompt of just over `tokens_above` tokens."""
    if not hasattr(price, "tiers"):
        return Decimal(price)
    rate = Decimal(price.base)
    for tier in price.tiers:
        if tokens_above >= tier.start:
            rate = Decimal(tier.price)
    return rate


def _base(price: Any) -> Decimal:
    return Decimal(price.base) if hasattr(price, "tiers") else Decimal(price)


def dataset_entry(*, api: str, upstream_id: str, at: dt.datetime) -> dict | None:
    """The catalog fields the dataset gives for a model, or None if it does not list it."""
    provider_id = DATASET_PROVIDERS.get(api)
    if provider_id is None:
        return None
    from genai_prices import data_snapshot

    try:
        _, model = data_snapshot.get_snapshot().find_provider_model(upstream_id, None, provider_id, None)
    except LookupError:
        return None
    prices = model.get_prices(at)
    if prices.input_mtok is None or prices.output_mtok is None:
        return None
    starts = sorted({t.start for p in (prices.input_mtok, prices.output_mtok) if hasattr(p, "tiers") for t in p.tiers})
    entry = {
        "input_price": _base(prices.input_mtok),
        "output_price": _base(prices.output_mtok),
        "price_tiers": [
            {
                "above": start,
                "input": str(_rate_at(prices.input_mtok, start)),
                "output": str(_rate_at(prices.output_mtok, start)),
            }
            for start in starts
        ],
        "prices_source": f"genai-prices {version('genai-prices')}: {provider_id}/{model.id}",
    }
    if model.context_window:
        entry["context_window"] = model.context_window
    return entry


def _same(field: str, old: Any, new: Any) -> bool:
    if field in ("input_price", "output_price"):
        return Decimal(old) == Decimal(new)
    if field == "price_tiers":
        norm = lambda tiers: [(int(t["above"]), Decimal(t["input"]), Decimal(t["output"])) for t in tiers or []]  # noqa: E731
        return norm(old) == norm(new)
    return old == new


def entry_diff(entry: dict, fields: dict) -> list[tuple[str, Any, Any]]:
    """(field, old, new) where the catalog `fields` differ from a dataset `entry`."""
    return [
        (name, fields.get(name), entry[name])
        for name in SYNCED_FIELDS
        if name in entry and not _same(name, fields.get(name), entry[name])
    ]


def catalog_diff(*, at: dt.datetime | None = None) -> tuple[list[Change], list[str]]:
    """What a sync would change, and the catalog models the dataset does not list."""
    at = at or dt.datetime.now(dt.UTC)
    changes: list[Change] = []
    unlisted: list[str] = []
    for spec in ModelSpec.objects.filter(is_demo=False).order_by("sort_order", "slug"):
        if spec.api not in DATASET_PROVIDERS:
            continue
        entry = dataset_entry(api=spec.api, upstream_id=spec.upstream_id, at=at)
        if entry is None:
            unlisted.append(spec.slug)
            continue
        current = {name: getattr(spec, name) for name in SYNCED_FIELDS}
        changes += [Change(spec.slug, name, old, new) for name, old, new in entry_diff(entry, current)]
    return changes, unlisted


def catalog_apply(changes: list[Change], *, at: dt.datetime | None = None) -> int:
    """Write `changes`; replies already held keep the prices stored with them. Returns models changed."""
    at = at or dt.datetime.now(dt.UTC)
    by_slug: dict[str, list[Change]] = {}
    for change in changes:
        by_slug.setdefault(change.slug, []).append(change)
    with transaction.atomic():
        for slug, items in by_slug.items():
            spec = ModelSpec.objects.select_for_update().get(slug=slug)
            for change in items:
                setattr(spec, change.field, change.new)
            entry = dataset_entry(api=spec.api, upstream_id=spec.upstream_id, at=at)
            spec.prices_source = entry["prices_source"] if entry else spec.prices_source
            spec.save()
    return len(by_slug)
