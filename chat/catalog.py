"""The default model catalog: the five families of PRODUCT.md, each pinned to a current model id.

Prices and context windows are those of the installed `genai-prices` dataset on
PRICES_AS_OF (`manage.py catalog sync` shows and applies later changes); reply limits,
tiers of the Auto router and image input are the operator's choices. The operator edits
any entry in the admin.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.conf import settings

# The day the prices below were read from genai-prices 0.2.3.
PRICES_AS_OF = dt.date(2026, 11, 28)
PRICES_SOURCE = "genai-prices 0.2.3"

DEFAULT_CATALOG: list[dict] = [
    {
        "slug": "gpt-4o-mini",
        "name": "GPT-4o mini",
        "provider": "OpenAI",
        "api": "openai",
        "upstream_id": "gpt-4o-mini-2024-07-18",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.6"),
        "price_tiers": [],
        "prices_source": f"{PRICES_SOURCE}: openai/gpt-4o-mini",
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "image_input": True,
        "tier": "cheap",
        "sort_order": 10,
    },
    {
        "slug": "gpt-4o",
        "name": "GPT-4o",
        "provider": "OpenAI",
        "api": "openai",
        "upstream_id": "gpt-4o-2024-11-20",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "input_price": Decimal("2.5"),
        "output_price": Decimal("10"),
        "price_tiers": [],
        "prices_source": f"{PRICES_SOURCE}: openai/gpt-4o",
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "image_input": True,
        "tier": "flagship",
        "sort_order": 20,
    },
    {
        "slug": "claude-sonnet",
        "name": "Claude Sonnet",
        "provider": "Anthropic",
        "api": "anthropic",
        "upstream_id": "claude-sonnet-5-5",
        "base_url": "https://api.anthropic.com",
        "api_key_env": "ANTHROPIC_API_KEY",
        "input_price": Decimal("2"),
        "output_price": Decimal("10"),
        "price_tiers": [],
        "prices_source": f"{PRICES_SOURCE}: anthropic/claude-sonnet-5-5",
        "context_window": 1_000_000,
        "max_output_tokens": 4_096,
        "image_input": True,
        "tier": "other",
        "sort_order": 30,
    },
    {
        "slug": "gemini-flash",
        "name": "Gemini Flash",
        "provider": "Google",
        "api": "gemini",
        "upstream_id": "gemini-3.8-flash",
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "api_key_env": "GEMINI_API_KEY",
        "input_price": Decimal("0.75"),
        "output_price": Decimal("3.75"),
        "price_tiers": [],
        "prices_source": f"{PRICES_SOURCE}: google/gemini-3.8-flash",
        "context_window": 1_000_000,
        "max_output_tokens": 4_096,
        "image_input": True,
        "tier": "other",
        "sort_order": 40,
    },
    {
        "slug": "mistral-small",
        "name": "Mistral Small",
        "provider": "Mistral",
        "api": "mistral",
        "upstream_id": "mistral-small-2603",
        "base_url": "https://api.mistral.ai/v1",
        "api_key_env": "MISTRAL_API_KEY",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.6"),
        "price_tiers": [],
        "prices_source": f"{PRICES_SOURCE}: mistral/mistral-small-2603",
        "context_window": 262_144,
        "max_output_tokens": 4_096,
        "image_input": False,
        "tier": "other",
        "sort_order": 50,
    },
]


def demo_entry() -> dict:
    """The demo model: priced like GPT-4o mini so demo credits behave like real ones."""
    return {
        "slug": "demo",
        "name": "Demo model",
        "provider": "Panels demo server",
        "api": "openai_compatible",
        "upstream_id": "demo",
        "base_url": settings.DEMO_MODEL_URL,
        "api_key_env": "",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.60"),
        "price_tiers": [],
        "prices_source": "manual",
        "context_window": 16_000,
        "max_output_tokens": 512,
        "image_input": True,
        "tier": "other",
        "is_demo": True,
        "sort_order": 1,
    }
