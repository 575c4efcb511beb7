"""POST /api/v1/topups: start a top-up and get its checkout URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from panels.models import ApiKey
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import stripe_settings
from wallet.models import Topup
from wallet.topup_views import TopupThrottle

# The database is set up before any autouse fixture that reads it.
pytestmark = pytest.mark.django_db

URL = "/api/v1/topups"


@pytest.fixture(autouse=True)
def fresh_throttle(db) -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice_api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def test_creates_a_demo_topup_with_its_checkout_url(alice_api: APIClient, alice) -> None:
    response = alice_api.post(URL, {"amount_usd": "5"}, format="json")

    assert response.status_code == 201
    topup = Topup.objects.get()
    assert response.json() == {
        "id": topup.pk,
        "checkout_url": f"http://testserver/wallet/topup/{topup.pk}/pay/",
        "amount_usd": "5.00",
        "credits": 10_000_000,
        "status": "created",
        "provider": "demo",
    }
    assert (topup.user, topup.amount_cents) == (alice, 500)


def test_a_json_number_is_accepted(alice_api: APIClient) -> None:
    response = alice_api.post(URL, {"amount_usd": 12.5}, format="json")
    assert response.status_code == 201
    assert Topup.objects.get().amount_cents == 1250


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0.99", "The smallest top-up is $1.00."),
        (1000.01, "The largest top-up is $1,000.00."),
        (5.001, "Use whole cents: at most two digits after the decimal point."),
        ("abc", "Enter the amount as a number of US dollars, for example 10 or 12.50."),
        (-5, "The smallest top-up is $1.00."),
    ],
)
def test_amounts_outside_the_rules_are_400(alice_api: APIClient, amount: object, message: str) -> None:
    response = alice_api.post(URL, {"amount_usd": amount}, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_amount", "message": message, "field": "amount_usd"}}
    assert not Topup.objects.exists()


def test_a_missing_amount_is_400(alice_api: APIClient) -> None:
    response = alice_api.post(URL, {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_bearer_key_auth_works_and_anonymous_is_refused(alice) -> None:
    _, key = ApiKey.issue(user=alice)
    client = APIClient()

    anonymous = client.post(URL, {"amount_usd": "1"}, format="json")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    keyed = client.post(URL, {"amount_usd": "1"}, format="json")

    assert anonymous.status_code in (401, 403)
    assert anonymous.json()["error"]["code"] in ("not_authenticated", "forbidden")
    assert keyed.status_code == 201
    assert Topup.objects.get().user == alice


def test_is_rate_limited(alice_api: APIClient, monkeypatch) -> None:
    monkeypatch.setattr(TopupThrottle, "rate", "2/min", raising=False)

    codes = [alice_api.post(URL, {"amount_usd": "1"}, format="json").status_code for _ in range(3)]

    assert codes == [201, 201, 429]
    assert Topup.objects.count() == 2


def test_with_stripe_returns_the_checkout_session_url(alice_api: APIClient) -> None:
    fake = FakeStripe().start()
    try:
        with stripe_settings(fake.url):
            response = alice_api.post(URL, {"amount_usd": "20"}, format="json")
            topup = Topup.objects.get()
            assert response.status_code == 201
            assert response.json()["checkout_url"] == fake.session(topup.checkout_session_id)["url"]
            assert response.json()["provider"] == "stripe"

            fake.fail_next = 10
            down = alice_api.post(URL, {"amount_usd": "20"}, format="json")
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "payment_provider_unavailable"
    finally:
        fake.stop()


@pytest.mark.parametrize(("amount", "cents"), [("9,99", 999), ("2,50", 250), ("1,000.00", 100_000), (9.99, 999)])
def test_a_decimal_comma_is_read_as_a_decimal_point_never_multiplied(alice_api: APIClient, amount, cents) -> None:
    response = alice_api.post(URL, {"amount_usd": amount}, format="json")

    assert response.status_code == 201
    assert Topup.objects.get().amount_cents == cents


@pytest.mark.parametrize("amount", ["1,000", "1.000", "5,001"])
def test_a_separator_that_reads_two_ways_is_refused(alice_api: APIClient, amount: str) -> None:
    response = alice_api.post(URL, {"amount_usd": amount}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_amount"
    assert error["message"].startswith(f"We can't tell whether {amount} means thousands or a decimal part.")
    assert not Topup.objects.exists()
