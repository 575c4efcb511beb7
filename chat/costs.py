"""What a reply costs, in credits, at the prices stored with it (ModelSpec.prices_snapshot).

Tiers follow the providers' (and genai-prices') cliff rule: a prompt of more than a
tier's `above` input tokens pays that tier's rates on all of its tokens, input and
output. Exact: Decimal arithmetic, rounded up to a whole credit, never a float.
"""

from __future__ import annotations

import math
from decimal import Decimal

from django.conf import settings

_MILLION = Decimal(1_000_000)


def rates(prices: dict, *, input_tokens: int) -> tuple[Decimal, Decimal]:
    """USD per 1M input and output tokens for a prompt of `input_tokens`."""
    rate_in, rate_out = Decimal(prices["input"]), Decimal(prices["output"])
    for tier in sorted(prices.get("tiers") or [], key=lambda t: int(t["above"])):
        if input_tokens > int(tier["above"]):
            rate_in, rate_out = Decimal(tier["input"]), Decimal(tier["output"])
    return rate_in, rate_out


def reply_cost(prices: dict, *, input_tokens: int, output_tokens: int) -> int:
    """ceil((input x input rate + output x output rate) x CREDITS_PER_USD / 1e6), in credits."""
    rate_in, rate_out = rates(prices, input_tokens=input_tokens)
    micro_usd = Decimal(input_tokens) * rate_in + Decimal(output_tokens) * rate_out
    return math.ceil(micro_usd * settings.CREDITS_PER_USD / _MILLION)
