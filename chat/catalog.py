"""The default model catalog (PRODUCT.md's price list); the operator edits it in the admin."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

DEFAULT_CATALOG: list[dict] = [
    {
        "slug": "gpt-4o-mini",
        "name": "GPT-4o mini",
        "provider": "OpenAI",
        "upstream_id": "gpt-4o-mini",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.60"),
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
        "upstream_id": "gpt-4o",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "input_price": Decimal("5.00"),
        "output_price": Decimal("15.00"),
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
        "upstream_id": "claude-sonnet-4-5",
        "base_url": "https://api.anthropic.com/v1",
        "api_key_env": "ANTHROPIC_API_KEY",
        "input_price": Decimal("3.00"),
        "output_price": Decimal("15.00"),
        "context_window": 200_000,
        "max_output_tokens": 4_096,
        "image_input": True,
        "tier": "other",
        "sort_order": 30,
    },
    {
        "slug": "gemini-flash",
        "name": "Gemini Flash",
        "provider": "Google",
        "upstream_id": "gemini-2.0-flash",
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "api_key_env": "GEMINI_API_KEY",
        "input_price": Decimal("0.10"),
        "output_price": Decimal("0.40"),
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
        "upstream_id": "mistral-small-latest",
        "base_url": "https://api.mistral.ai/v1",
        "api_key_env": "MISTRAL_API_KEY",
        "input_price": Decimal("0.20"),
        "output_price": Decimal("0.60"),
        "context_window": 128_000,
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
        "upstream_id": "demo",
        "base_url": settings.DEMO_MODEL_URL,
        "api_key_env": "",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.60"),
        "context_window": 16_000,
        "max_output_tokens": 512,
        "image_input": True,
        "tier": "other",
        "is_demo": True,
        "sort_order": 1,
    }
