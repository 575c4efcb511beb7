"""The public pricing page: the catalog and a monthly cost calculator (a GET form, no login)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat import pricing
from chat.router import CHEAP, FLAGSHIP
from chat.routing import tier_model
from chat.selectors import models_catalog


def _whole(label: str, minimum: int, maximum: int, initial: int, message: str) -> forms.IntegerField:
    errors = {key: message for key in ("required", "invalid", "min_value", "max_value")}
    return forms.IntegerField(
        label=label,
        min_value=minimum,
        max_value=maximum,
        initial=initial,
        error_messages=errors,
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "step": 1, "data-error": message}),
    )


class CalculatorForm(forms.Form):
    tasks = _whole(
        "Tasks per month",
        1,
        pricing.MAX_TASKS,
        pricing.DEFAULT_TASKS,
        f"Enter a whole number of tasks from 1 to {pricing.MAX_TASKS:,}.",
    )
    input_tokens = _whole(
        "Input tokens per task",
        0,
        pricing.MAX_INPUT_TOKENS,
        pricing.DEFAULT_INPUT_TOKENS,
        f"Enter a whole number of input tokens from 0 to {pricing.MAX_INPUT_TOKENS:,}.",
    )
    output_tokens = _whole(
        "Output tokens per task",
        0,
        pricing.MAX_OUTPUT_TOKENS,
        pricing.DEFAULT_OUTPUT_TOKENS,
        f"Enter a whole number of output tokens from 0 to {pricing.MAX_OUTPUT_TOKENS:,}.",
    )
    cheap_share = _whole(
        "Share on the cheap tier (%)",
        0,
        100,
        pricing.DEFAULT_CHEAP_SHARE,
        "Enter a percentage from 0 to 100.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            # The error sits right under its field and is read out with it.
            field.widget.attrs["aria-describedby"] = f"id_{name}_error"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("input_tokens") == 0 and data.get("output_tokens") == 0:
            self.add_error("output_tokens", "A task uses at least one token: enter input or output tokens.")
        return data


DEFAULTS = {name: field.initial for name, field in CalculatorForm.base_fields.items()}


def _tier_prices(tier: str, models: list) -> pricing.TierPrices | None:
    spec = tier_model(tier, models)
    if spec is None:
        return None
    return pricing.TierPrices(name=spec.name, input_price=spec.input_price, output_price=spec.output_price)


def _e4(price: Decimal) -> int:
    # Catalog prices have four decimals: in ten-thousandths of a dollar they are
    # whole numbers, which pricing.js multiplies as BigInts without rounding.
    return int(price * 10_000)


def _row(costs: pricing.MonthlyCosts) -> dict[str, str]:
    return {
        "flagship": pricing.format_usd(costs.flagship_only),
        "cheap": pricing.format_usd(costs.cheap_only),
        "auto": pricing.format_usd(costs.auto),
        "flat": pricing.format_usd(costs.flat),
    }


def reference_rows(models: list) -> list[dict[str, Any]]:
    """The 500 / 2,000 / 10,000 tasks a month table at the default mix, from the live catalog."""
    cheap, flagship = _tier_prices(CHEAP, models), _tier_prices(FLAGSHIP, models)
    if cheap is None or flagship is None:
        return []
    rows = []
    for tasks in pricing.REFERENCE_VOLUMES:
        costs = pricing.monthly_costs(
            tasks_per_month=tasks,
            input_tokens=DEFAULTS["input_tokens"],
            output_tokens=DEFAULTS["output_tokens"],
            cheap_share=DEFAULTS["cheap_share"],
            cheap=cheap,
            flagship=flagship,
        )
        rows.append({"tasks": tasks, **_row(costs)})
    return rows


def pricing_page(request: HttpRequest) -> HttpResponse:
    models = list(models_catalog())
    cheap, flagship = _tier_prices(CHEAP, models), _tier_prices(FLAGSHIP, models)
    asked = any(name in request.GET for name in DEFAULTS)
    form = CalculatorForm(request.GET if asked else None, initial=DEFAULTS)
    mix = form.cleaned_data if asked and form.is_valid() else (None if asked else DEFAULTS)
    context: dict[str, Any] = {"models": models, "form": form, "cheap": cheap, "flagship": flagship, "mix": mix}
    if cheap is not None and flagship is not None:
        reference_mix = mix or DEFAULTS

        def costs_for(tasks: int, chosen: dict[str, int]) -> pricing.MonthlyCosts:
            return pricing.monthly_costs(
                tasks_per_month=tasks,
                input_tokens=chosen["input_tokens"],
                output_tokens=chosen["output_tokens"],
                cheap_share=chosen["cheap_share"],
                cheap=cheap,
                flagship=flagship,
            )

        if mix is not None:
            costs = costs_for(mix["tasks"], mix)
            context["costs"] = _row(costs)
            context["auto_vs_flat"] = pricing.format_usd(abs(costs.flat - costs.auto))
            context["auto_below_flat"] = costs.auto <= costs.flat
        context["reference_mix"] = reference_mix
        context["reference"] = [
            {"tasks": tasks, **_row(costs_for(tasks, reference_mix))} for tasks in pricing.REFERENCE_VOLUMES
        ]
        context["pricing_config"] = {
            "cheap": {"name": cheap.name, "input_e4": _e4(cheap.input_price), "output_e4": _e4(cheap.output_price)},
            "flagship": {
                "name": flagship.name,
                "input_e4": _e4(flagship.input_price),
                "output_e4": _e4(flagship.output_price),
            },
            "flat_cents": int(pricing.FLAT_PLAN_USD * 100),
        }
    return render(request, "chat/pricing.html", context)
