"""The cheap and flagship tiers' prices, for the router's saving figures: the catalog's, as chat/pricing.py uses."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError

from chat.catalog import DEFAULT_CATALOG
from chat.pricing import TierPrices
from chat.router import CHEAP, FLAGSHIP


def _default(slug: str) -> TierPrices:
    entry = next(e for e in DEFAULT_CATALOG if e["slug"] == slug)
    return TierPrices(name=entry["name"], input_price=entry["input_price"], output_price=entry["output_price"])


def tier_prices() -> tuple[TierPrices, TierPrices]:
    """(cheap, flagship) from the database's catalog; the default catalog when it has no such model."""
    from chat.routing import tier_model

    try:
        found = {tier: tier_model(tier) for tier in (CHEAP, FLAGSHIP)}
    except DatabaseError:
        found = {CHEAP: None, FLAGSHIP: None}
    prices = []
    for tier, slug in ((CHEAP, settings.AUTO_CHEAP_MODEL), (FLAGSHIP, settings.AUTO_FLAGSHIP_MODEL)):
        spec = found[tier]
        if spec is not None:
            prices.append(TierPrices(name=spec.name, input_price=spec.input_price, output_price=spec.output_price))
        else:
            prices.append(_default(slug))
    return prices[0], prices[1]
