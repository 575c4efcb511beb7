"""/api/v1/wallet/auto-topup (GET, PUT, PATCH, DELETE) and /api/v1/wallet/auto-topup/card (POST):
the automatic top-up settings as JSON, with an API key, checked as the wallet page's form checks them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.messages import get_messages
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from panels.models import ApiKey
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import event, post_event, stripe_settings
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, AutoTopup

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/wallet/auto-topup"
CARD = "/api/v1/wallet/auto-topup/card"
DOLLAR = 2_000_000


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    ids: list[int] = []
    monkeypatch.setattr("wallet.autotopups.autotopup_queue", lambda *, account_id: ids.append(account_id))
    return ids


@pytest.fixture
def api(alice) -> APIClient:
    """Alice's API key, as a script would use it."""
    _, secret = ApiKey.issue(user=alice, name="auto top-up script")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def test_get_before_anything_is_set_shows_the_defaults_and_writes_nothing(api, alice):
    body = api.get(URL).json()

    assert body == {
        "enabled": False,
        "threshold": 2 * DOLLAR,
        "threshold_usd": "2.00",
        "amount_usd": "10.00",
        "credits": 10 * DOLLAR,
        "paused": False,
        "paused_reason": "",
        "paused_at": None,
        "card": None,
        "card_provider": "demo",
        "unavailable_reason": "",
        "max_per_day": 3,
        "last_attempt": None,
    }
    assert not AutoTopup.objects.exists()


def test_demo_card_then_on_below_the_threshold_starts_a_top_up(api, alice, queued):
    account = funded_wallet(alice, DOLLAR)  # $1

    refused = api.put(URL, {"enabled": True, "threshold_usd": "2", "amount_usd": "10"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "card_required"
    assert queued == []

    saved = api.post(CARD, {"demo": "card"}, format="json")
    assert saved.status_code == 200
    assert saved.json()["setup_url"] is None
    assert saved.json()["auto_topup"]["card"] == {"brand": "demo", "last4": "4242"}

    on = api.put(URL, {"enabled": True, "threshold_usd": "2.50", "amount_usd": "12,50"}, format="json")

    assert on.status_code == 200, on.content
    assert (on.json()["enabled"], on.json()["threshold_usd"], on.json()["amount_usd"]) == (True, "2.50", "12.50")
    setting = AutoTopup.objects.get()
    assert (setting.enabled, setting.threshold, setting.amount_cents) == (True, 5 * DOLLAR // 2, 1250)
    assert queued == [account.pk]  # below $2.50: the first top-up is queued once this commits


def test_patch_changes_only_what_it_names(api, alice, queued):
    api.post(CARD, {"demo": "card"}, format="json")
    api.put(URL, {"enabled": True, "threshold_usd": "3", "amount_usd": "20"}, format="json")

    body = api.patch(URL, {"amount_usd": 15}, format="json").json()

    assert (body["enabled"], body["threshold_usd"], body["amount_usd"]) == (True, "3.00", "15.00")
    body = api.patch(URL, {"enabled": False}, format="json").json()
    assert (body["enabled"], body["amount_usd"], body["card"]["last4"]) == (False, "15.00", "4242")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("threshold_usd", "2,50", "invalid_threshold"),
        ("threshold_usd", "0", "invalid_threshold"),
        ("threshold_usd", "5000", "invalid_threshold"),
        ("threshold_usd", "", "invalid_threshold"),
        ("amount_usd", "0.5", "invalid_amount"),
        ("amount_usd", "1,000", "invalid_amount"),
        ("amount_usd", "2000", "invalid_amount"),
    ],
)
def test_refused_as_the_wallet_page_refuses_with_the_same_words(api, alice, alice_client, field, value, code):
    values = {"threshold_usd": "2", "amount_usd": "10", field: value}

    answer = api.put(URL, {"enabled": False, **values}, format="json")
    page = alice_client.post("/wallet/auto-topup/", values)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    (flash,) = [str(m) for m in get_messages(page.wsgi_request)]
    assert flash == f"Automatic top-up not changed: {error['message']}"
    assert not AutoTopup.objects.exists()


def test_a_pause_is_lifted_with_paused_false_and_cannot_be_set(api, alice, queued):
    account = funded_wallet(alice, DOLLAR)
    api.post(CARD, {"demo": "declines"}, format="json")
    api.put(URL, {"enabled": True, "threshold_usd": "2", "amount_usd": "10"}, format="json")
    from wallet.autotopups import autotopup_run

    autotopup_run(account_id=account.pk)  # the declining demo card: failed, paused
    paused = api.get(URL).json()
    assert paused["paused"] and "declined" in paused["paused_reason"]
    assert paused["last_attempt"]["status"] == "failed"

    assert api.patch(URL, {"paused": True}, format="json").status_code == 400
    queued.clear()
    resumed = api.patch(URL, {"paused": False}, format="json")

    assert resumed.status_code == 200 and not resumed.json()["paused"]
    assert queued == [account.pk]  # still below: charged again at once


def test_delete_turns_it_off_and_forgets_the_card(api, alice, queued):
    api.post(CARD, {"demo": "card"}, format="json")
    api.put(URL, {"enabled": True, "threshold_usd": "2", "amount_usd": "10"}, format="json")

    assert api.delete(URL).status_code == 204

    body = api.get(URL).json()
    assert (body["enabled"], body["card"], body["threshold_usd"]) == (False, None, "2.00")


def test_a_frozen_wallet_is_refused(api, alice):
    Account.objects.filter(pk=funded_wallet(alice, DOLLAR).pk).update(frozen_reason="a disputed payment")

    answer = api.post(CARD, {"demo": "card"}, format="json")

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "wallet_frozen"


def test_writes_are_rate_limited_with_top_ups_and_reads_are_not(api, alice, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "topup", "2/min")
    api.post(CARD, {"demo": "card"}, format="json")
    api.patch(URL, {"amount_usd": "11"}, format="json")

    limited = api.patch(URL, {"amount_usd": "12"}, format="json")

    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert api.get(URL).status_code == 200
    assert AutoTopup.objects.get().amount_cents == 1100


def test_with_stripe_the_card_is_saved_through_setup_mode_checkout(fake, api, alice, client):
    assert api.post(CARD, {"demo": "card"}, format="json").status_code == 400  # no demo beside Stripe

    started = api.post(CARD, {}, format="json")

    assert started.status_code == 201
    url = started.json()["setup_url"]
    assert url.startswith("https://checkout.stripe.com/")
    (create,) = fake.calls("POST", "/v1/checkout/sessions")
    assert create["form"]["mode"] == "setup"
    session = fake.complete_setup(url.rsplit("/", 1)[1])
    post_event(client, event("checkout.session.completed", session))
    body = api.get(URL).json()
    assert body["card"] == {"brand": "visa", "last4": "4242"} and body["card_provider"] == "stripe"


def test_stripe_unreachable_is_a_503_and_nothing_is_saved(fake, api, alice):
    fake.fail_next = 10

    answer = api.post(CARD, {}, format="json")

    assert answer.status_code == 503 and answer.json()["error"]["code"] == "payment_provider_unavailable"
    assert api.get(URL).json()["card"] is None


def test_no_payment_provider_is_a_503(api, settings):
    settings.DEMO_ALLOWED = False

    answer = api.post(CARD, {"demo": "card"}, format="json")

    assert answer.status_code == 503 and answer.json()["error"]["code"] == "topups_unavailable"
    assert "no payment provider configured" in api.get(URL).json()["unavailable_reason"]
