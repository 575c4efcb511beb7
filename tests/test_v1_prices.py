"""/v1 calls are held and charged at the prices stored with them, tiers included, like chat
replies: a price change while a call runs never alters it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from chat.costs import reply_cost
from chat.models import ModelSpec
from chat.tokens import estimate_request_tokens
from openai_api.services import Begun, call_begin, call_finish
from openai_api.upstream import Usage
from panels.models import ApiKey
from tests.wallet_helpers import funded_wallet
from wallet.models import Entry, Hold

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def catalog() -> None:
    call_command("load_catalog", verbosity=0)  # a transactional test before this one emptied it


MESSAGES = [{"role": "user", "content": "Summarise this in one line, please."}]


def begin(secret: str, *, max_tokens: int = 200) -> Begun:
    body = json.dumps({"model": "demo", "messages": MESSAGES, "max_tokens": max_tokens}).encode()
    begun = call_begin(authorization=f"Bearer {secret}", body=body)
    assert isinstance(begun, Begun), begun
    return begun


def finish(begun: Begun, usage: Usage) -> int:
    done = call_finish(
        begun=begun, text="One line.", usage=usage, finish_reason="stop", disconnected=False, failure=None
    )
    return done.cost


def test_a_price_change_while_a_call_runs_does_not_alter_its_charge(alice, catalog):
    funded_wallet(alice, 10_000_000)
    _, secret = ApiKey.issue(user=alice, name="tool")
    demo = ModelSpec.objects.get(slug="demo")
    held_prices = demo.prices_snapshot()

    begun = begin(secret)
    ModelSpec.objects.filter(pk=demo.pk).update(input_price=Decimal("100"), output_price=Decimal("400"))
    begun.spec.refresh_from_db()
    cost = finish(begun, Usage(input_tokens=20, output_tokens=30))

    assert begun.call.prices == held_prices
    assert cost == reply_cost(held_prices, input_tokens=20, output_tokens=30)
    assert sum(Entry.objects.filter(reference=f"apicall:{begun.call.pk}").values_list("amount", flat=True)) == cost


def test_the_hold_and_the_charge_follow_the_models_tiers(alice, catalog):
    funded_wallet(alice, 100_000_000)
    _, secret = ApiKey.issue(user=alice, name="tool")
    tiers = [{"above": 10, "input": "3", "output": "15"}]  # a tiny tier so a short prompt passes it
    ModelSpec.objects.filter(slug="demo").update(input_price=Decimal("1"), output_price=Decimal("5"), price_tiers=tiers)
    demo = ModelSpec.objects.get(slug="demo")
    estimate = estimate_request_tokens(demo, MESSAGES)
    assert estimate > 10

    begun = begin(secret, max_tokens=200)
    hold = Hold.objects.get(pk=begun.call.hold_id)
    # The worst case at the upper tier's rates, which apply to the whole prompt and reply.
    assert hold.amount == reply_cost(demo.prices_snapshot(), input_tokens=estimate, output_tokens=200)
    assert hold.amount > reply_cost({"input": "1", "output": "5"}, input_tokens=estimate, output_tokens=200)

    cost = finish(begun, Usage(input_tokens=estimate, output_tokens=50))
    assert cost == reply_cost({"input": "3", "output": "15"}, input_tokens=estimate, output_tokens=50)
