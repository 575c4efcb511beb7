from __future__ import annotations

from django.contrib import admin

from chat.models import ModelSpec


@admin.register(ModelSpec)
class ModelSpecAdmin(admin.ModelAdmin):
    list_display = [
        "name", "slug", "provider", "api", "upstream_id", "input_price", "output_price", "context_window",
        "tier", "enabled", "availability", "checked_at",
    ]  # fmt: skip
    list_editable = ["input_price", "output_price", "enabled"]
    list_filter = ["provider", "api", "tier", "enabled"]
    readonly_fields = ["availability", "checked_at", "prices_source"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "provider", "tier", "enabled", "sort_order", "is_demo"]}),
        (
            "Where it is served",
            {
                "fields": ["api", "base_url", "upstream_id", "api_key_env"],
                "description": "A self-hosted model (Ollama, vLLM, llama.cpp server, LM Studio): API "
                "“OpenAI-compatible server”, its /v1 base URL, the model's name there, and the variable "
                "holding its key (empty if it needs none).",
            },
        ),
        (
            "Prices (USD per 1M tokens; zero allowed)",
            {"fields": ["input_price", "output_price", "price_tiers", "prices_source"]},
        ),
        ("Limits", {"fields": ["context_window", "max_output_tokens", "image_input"]}),
        ("Availability", {"fields": ["availability", "check_problem", "checked_at"]}),
    ]

    @admin.display(description="availability")
    def availability(self, obj: ModelSpec) -> str:
        return "available" if obj.available else f"unavailable: {obj.operator_reason}"
