"""Prices from genai-prices: `catalog sync` (diff, then --apply), tiers, the cost formula,
and `catalog add` for a self-hosted model."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from chat.catalog import DEFAULT_CATALOG, PRICES_AS_OF
from chat.costs import rates, reply_cost
from chat.models import ModelSpec
from chat.price_sync import catalog_diff, dataset_entry

pytestmark = pytest.mark.django_db

AS_OF = dt.datetime.combine(PRICES_AS_OF, dt.time(12), tzinfo=dt.UTC)


def sync(*args: str) -> str:
    out = io.StringIO()
    call_command("catalog", "sync", "--at", PRICES_AS_OF.isoformat(), *args, stdout=out)
    return out.getvalue()


def test_the_shipped_catalog_matches_the_installed_dataset():
    call_command("load_catalog", "--reset", verbosity=0)
    assert catalog_diff(at=AS_OF) == ([], [])
    assert "nothing to change" in sync()
    for entry in DEFAULT_CATALOG:
        found = dataset_entry(api=entry["api"], upstream_id=entry["upstream_id"], at=AS_OF)
        assert found is not None, entry["slug"]
        assert (found["input_price"], found["output_price"]) == (entry["input_price"], entry["output_price"])
        assert found["context_window"] == entry["context_window"]


def test_sync_shows_the_differences_and_writes_them_only_when_asked():
    call_command("load_catalog", "--reset", verbosity=0)
    # A catalog still at the retired snapshot's prices, as the seed shipped it.
    ModelSpec.objects.filter(slug="gpt-4o").update(input_price=Decimal("5.00"), output_price=Decimal("15.00"))
    shown = sync()
    assert "gpt-4o: input_price Decimal('5.0000') -> Decimal('2.5')" in shown
    assert "gpt-4o: output_price Decimal('15.0000') -> Decimal('10')" in shown
    assert "run again with --apply" in shown
    assert ModelSpec.objects.get(slug="gpt-4o").input_price == Decimal("5.00")
    assert "Applied: 2 changes to 1 models." in sync("--apply")
    spec = ModelSpec.objects.get(slug="gpt-4o")
    assert (spec.input_price, spec.output_price) == (Decimal("2.5"), Decimal("10"))
    assert spec.prices_source.startswith("genai-prices 0.2.3: openai/gpt-4o")
    assert "nothing to change" in sync()


def test_tiered_prices_come_from_the_dataset_and_the_cost_follows_them():
    call_command("load_catalog", "--reset", verbosity=0)
    # Claude Sonnet 4.5 charges more above 200K input tokens (genai-prices: $3 -> $6 in, $15 -> $22.5 out).
    ModelSpec.objects.filter(slug="claude-sonnet").update(upstream_id="claude-sonnet-4-5-20250929")
    sync("--apply")
    spec = ModelSpec.objects.get(slug="claude-sonnet")
    assert spec.price_tiers == [{"above": 200_000, "input": "6", "output": "22.5"}]
    assert (spec.input_price, spec.output_price, spec.context_window) == (Decimal("3"), Decimal("15"), 200_000)
    prices = spec.prices_snapshot()
    assert rates(prices, input_tokens=200_000) == (Decimal("3"), Decimal("15"))
    assert rates(prices, input_tokens=200_001) == (Decimal("6"), Decimal("22.5"))
    # ceil((200,000 x 3 + 1,000 x 15) x 2,000,000 / 1e6) = 1,230,000 credits ($0.615).
    assert reply_cost(prices, input_tokens=200_000, output_tokens=1_000) == 1_230_000
    # Above the tier every token pays its rate: (200,001 x 6 + 1,000 x 22.5) x 2 = 2,445,012.
    assert reply_cost(prices, input_tokens=200_001, output_tokens=1_000) == 2_445_012
    assert "more above 200,000 input tokens" in spec.price_label


def test_the_cost_is_exact_and_rounds_up_to_a_whole_credit():
    prices = {"input": "0.15", "output": "0.6", "tiers": []}
    assert reply_cost(prices, input_tokens=1, output_tokens=0) == 1  # 0.3 credit -> 1
    assert reply_cost(prices, input_tokens=10, output_tokens=0) == 3
    assert reply_cost(prices, input_tokens=0, output_tokens=0) == 0
    assert reply_cost({"input": "0", "output": "0", "tiers": []}, input_tokens=10**6, output_tokens=10**6) == 0


def test_catalog_add_registers_a_self_hosted_server_with_zero_prices_allowed():
    out = io.StringIO()
    call_command(
        "catalog", "add", "llama-local", "--name", "Llama (local)", "--base-url", "http://127.0.0.1:11434/v1",
        "--upstream-id", "llama3.2", "--context-window", "32768", stdout=out,
    )  # fmt: skip
    spec = ModelSpec.objects.get(slug="llama-local")
    assert spec.api == ModelSpec.Api.OPENAI_COMPATIBLE and spec.provider == "Self-hosted"
    assert (spec.input_price, spec.output_price) == (0, 0) and spec.available
    assert "Added Llama (local)" in out.getvalue()
    with pytest.raises(CommandError, match="already a model"):
        call_command("catalog", "add", "llama-local", "--name", "x", "--base-url", "http://x/v1", "--upstream-id", "y")
    with pytest.raises(CommandError, match="zero or more"):
        call_command(
            "catalog", "add", "neg", "--name", "x", "--base-url", "http://x/v1", "--upstream-id", "y",
            "--input-price", "-1",
        )  # fmt: skip
