"""Per-key request rate on the OpenAI-compatible API, in OpenAI's 429 shape.

The same atomic sliding log as the chat API's limits (panels/ratelimit.py), counted per
API key (not per user: one runaway tool must not lock its owner's other keys out), at
the `v1` rate of REST_FRAMEWORK's DEFAULT_THROTTLE_RATES (RATE_V1, e.g. "600/min").
Redis down: the limit fails open, as the others do; spending still needs a hold.
"""

from __future__ import annotations

import math

from django.conf import settings

from openai_api.errors import OpenAIError
from panels.models import ApiKey
from panels.ratelimit import rate_check

_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int] | None:
    """ "600/min" -> (600, 60), DRF's format; None (no limit) when empty."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    return int(count), _SECONDS[period[:1]]


def key_rate_check(api_key: ApiKey) -> None:
    """Count one request of this key; OpenAIError 429 with Retry-After when over the rate."""
    rate = parse_rate(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get("v1") or "")
    if rate is None:
        return
    limit, window = rate
    allowed, wait = rate_check(key=f"v1:key:{api_key.pk}", limit=limit, window_seconds=window)
    if allowed:
        return
    retry_after = max(1, math.ceil(wait))
    raise OpenAIError(
        429,
        f"Rate limit reached for this API key: {limit} requests per {window} seconds. "
        f"Please try again in {retry_after} s.",
        code="rate_limit_exceeded",
        retry_after=retry_after,
    )
