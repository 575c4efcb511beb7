"""What a month of tasks costs on the flagship only, the cheap tier only, Auto, or a flat plan.

Pure and exact: prices are Decimals (USD per 1M tokens, as in the catalog) and
every figure is computed without floats, so static/js/pricing.js can reproduce
it with integers (BigInt) to the cent.

The default task mix: 1,600 input + 500 output tokens per task, 80% of tasks on
the cheap tier (PRODUCT.md). At the catalog's November 2026 prices (genai-prices:
GPT-4o $2.50 / $10, GPT-4o mini $0.15 / $0.60) it gives, per 500 tasks a month, $4.50
on the flagship, $0.27 on the cheap tier and $1.12 with Auto. The seed article's
volume table used GPT-4o's retired $5 / $15 snapshot and can't be reproduced from its
own price list; this calculator, fed by the live catalog, is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

DEFAULT_TASKS = 500
DEFAULT_INPUT_TOKENS = 1_600
DEFAULT_OUTPUT_TOKENS = 500
DEFAULT_CHEAP_SHARE = 80  # percent of tasks Auto sends to the cheap tier
REFERENCE_VOLUMES = (500, 2_000, 10_000)
FLAT_PLAN_USD = Decimal(20)

MAX_TASKS = 1_000_000
MAX_INPUT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 100_000

_MILLION = Decimal(1_000_000)
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class TierPrices:
    name: str
    input_price: Decimal  # USD per 1M input tokens
    output_price: Decimal  # USD per 1M output tokens


@dataclass(frozen=True)
class MonthlyCosts:
    tasks: int
    flagship_only: Decimal  # USD a month, exact
    cheap_only: Decimal
    auto: Decimal
    flat: Decimal


def task_cost(*, input_tokens: int, output_tokens: int, prices: TierPrices) -> Decimal:
    """USD for one task, exact."""
    return (input_tokens * prices.input_price + output_tokens * prices.output_price) / _MILLION


def monthly_costs(
    *,
    tasks_per_month: int,
    input_tokens: int,
    output_tokens: int,
    cheap_share: int,
    cheap: TierPrices,
    flagship: TierPrices,
    flat_usd: Decimal = FLAT_PLAN_USD,
) -> MonthlyCosts:
    """A month of `tasks_per_month` tasks of one mix; Auto puts `cheap_share` percent on the cheap tier."""
    if not 0 <= cheap_share <= 100:
        raise ValueError("cheap_share is a percentage from 0 to 100")
    if tasks_per_month < 0 or input_tokens < 0 or output_tokens < 0:
        raise ValueError("tasks and tokens cannot be negative")
    on_cheap = task_cost(input_tokens=input_tokens, output_tokens=output_tokens, prices=cheap)
    on_flagship = task_cost(input_tokens=input_tokens, output_tokens=output_tokens, prices=flagship)
    auto = (cheap_share * on_cheap + (100 - cheap_share) * on_flagship) / 100
    return MonthlyCosts(
        tasks=tasks_per_month,
        flagship_only=tasks_per_month * on_flagship,
        cheap_only=tasks_per_month * on_cheap,
        auto=tasks_per_month * auto,
        flat=flat_usd,
    )


def format_usd(value: Decimal) -> str:
    """$1,234.56 to the cent (half up, as pricing.js rounds); under a cent but above zero says so."""
    cents = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    if cents == 0 and value > 0:
        return "under $0.01"
    return f"${cents:,.2f}"
