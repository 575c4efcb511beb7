"""The one way Panels writes an amount of money: "$12.35", "$0.6397", "-$0.01205".

Two decimals from a dollar up; below a dollar four significant digits, so a reply that
cost a fraction of a cent still shows what it cost. The exact amount is always the
credits written beside it (2,000,000 credits = $1). static/js/chat.js's `formatUsd`
follows the same rule for figures the page updates live.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.contrib.humanize.templatetags.humanize import intcomma

from wallet.services import credits_to_usd


def usd_text(value: Decimal | int | str) -> str:
    value = Decimal(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1 or not value:
        return f"{sign}${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"
    rounded = value.quantize(Decimal(1).scaleb(value.adjusted() - 3), ROUND_HALF_UP)
    text = f"{rounded:f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def credits_usd_text(credits: int) -> str:
    """The dollar value of an amount of credits."""
    return usd_text(credits_to_usd(credits))


def credits_text(credits: int) -> str:
    """'1,234,000 credits ($0.617)': credits first, their dollar value alongside."""
    return f"{intcomma(credits)} credits ({credits_usd_text(credits)})"
