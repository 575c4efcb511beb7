from __future__ import annotations

import os
from decimal import Decimal

from django.db import models
from django.db.models import Q


class ModelSpec(models.Model):
    """One model of the catalog: where it is served, what it costs, what it can take."""

    class Tier(models.TextChoices):
        CHEAP = "cheap", "Cheap"
        FLAGSHIP = "flagship", "Flagship"
        OTHER = "other", "Other"

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=40)
    upstream_id = models.CharField(max_length=120)
    base_url = models.URLField(max_length=300)
    api_key_env = models.CharField(
        max_length=80, blank=True, help_text="Environment variable holding the key; empty for the demo server."
    )
    input_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M input tokens")
    output_price = models.DecimalField(max_digits=10, decimal_places=4, help_text="USD per 1M output tokens")
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    image_input = models.BooleanField(default=False)
    tier = models.CharField(max_length=10, choices=Tier.choices, default=Tier.OTHER)
    is_demo = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=100)

    class Meta:
        ordering = ["sort_order", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_price__gte=0, output_price__gte=0), name="model_prices_non_negative"
            ),
            models.CheckConstraint(condition=Q(max_output_tokens__gt=0), name="model_max_output_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        if self.is_demo:
            return "demo"
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    @property
    def available(self) -> bool:
        return self.enabled and bool(self.api_key)

    @property
    def unavailable_reason(self) -> str:
        if not self.enabled:
            return "disabled by the operator"
        if not self.api_key:
            return f"{self.api_key_env} is not set"
        return ""

    @property
    def price_label(self) -> str:
        return f"${self.input_price.normalize():f} in / ${self.output_price.normalize():f} out per 1M tokens"

    def price_per_million(self) -> tuple[Decimal, Decimal]:
        return self.input_price, self.output_price
