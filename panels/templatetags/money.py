"""Money in templates, one format everywhere (panels/money.py):

{{ topup.amount_usd|usd }}        -> $5.00
{{ entry.amount|credits_usd }}    -> $0.0006 (the dollar value of credits)
{{ reply.cost|credits }}          -> 1,200 credits ($0.0006)
"""

from __future__ import annotations

from decimal import Decimal

from django import template

from panels import money

register = template.Library()


@register.filter
def usd(value: Decimal | int | str | None) -> str:
    return "" if value is None or value == "" else money.usd_text(value)


@register.filter
def credits_usd(value: int | None) -> str:
    return "" if value is None else money.credits_usd_text(int(value))


@register.filter
def credits(value: int | None) -> str:
    return "" if value is None else money.credits_text(int(value))
