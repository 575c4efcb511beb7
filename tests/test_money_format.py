"""One money format on every page: a $ sign, two decimals from a dollar up, four
significant digits below it, credits alongside; dates say their timezone."""

from __future__ import annotations

from decimal import Decimal

import pytest

from panels.money import credits_text, credits_usd_text, usd_text
from tests.wallet_helpers import funded_wallet
from wallet.models import Topup
from wallet.services import wallet_hold, wallet_post


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        ("0", "$0.00"),
        ("5", "$5.00"),
        ("1234.5", "$1,234.50"),
        ("12.345", "$12.35"),
        ("0.63970", "$0.6397"),
        ("0.012049", "$0.01205"),
        ("0.0000005", "$0.0000005"),
        ("-0.0006", "-$0.0006"),
        ("0.99999", "$1.00"),
    ],
)
def test_usd_text(usd, text):
    assert usd_text(Decimal(usd)) == text


def test_credits_come_with_their_dollar_value():
    assert credits_usd_text(1_200) == "$0.0006"
    assert credits_text(24_690_000) == "24,690,000 credits ($12.35)"


@pytest.mark.django_db
def test_header_wallet_history_and_topups_share_the_format(alice, alice_client):
    account = funded_wallet(alice, 3_000_000)
    wallet_post(hold=wallet_hold(account=account, amount=5000, idempotency_key="h", reference="message:7"), amount=1234)
    Topup.objects.create(
        user=alice, account=account, provider="demo", amount_cents=500, credits=10_000_000, checkout_session_id="x"
    )
    body = alice_client.get("/wallet/").content.decode()
    # Header and summary: 2,998,766 credits = $1.499383 -> $1.50.
    assert "<span data-balance-usd>$1.50</span>" in body
    assert '2,998,766</strong> credits <span class="muted">$1.50</span>' in body
    # History: -1,234 credits = -$0.000617, with the $ sign; the grant $1.50.
    assert '<td class="num">-$0.000617</td>' in body
    assert '<td class="num">$1.50</td>' in body
    assert "5.000000" not in body and "0.000617</td>" not in body.replace("-$0.000617</td>", "")
    # Top-ups: $5.00; dates carry their timezone.
    assert '<td class="num">$5.00</td>' in body
    assert "Date (UTC)" in body and " UTC</time>" in body
