"""Nothing free in production: no demo checkout, no demo model, no top-ups without Stripe.

The URL table and the settings are read once per process, so what production loads is
checked in a fresh Python (as tests/test_settings_guard.py does); the services' own
refusals (the second lock) are checked here with the setting overridden.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from chat.models import Conversation, Message, ModelSpec
from chat.providers import ProviderError, chat_stream
from tests.test_settings_guard import run
from tests.wallet_helpers import funded_wallet
from wallet.models import Entry, Topup
from wallet.services import wallet_for_user, wallet_freeze
from wallet.topups import TopupsUnavailable, topup_create, topup_demo_pay, topup_fulfil

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from chat.models import ModelSpec
from wallet.topups import demo_checkout_enabled, topups_unavailable_reason
out = {"demo_allowed": settings.DEMO_ALLOWED, "topups_closed": topups_unavailable_reason(),
       "demo_checkout": demo_checkout_enabled()}
try:
    resolve("/wallet/topup/1/pay/")
    out["demo_pay_url"] = True
except Resolver404:
    out["demo_pay_url"] = False
try:
    reverse("topup_demo_pay", args=[1])
    out["demo_pay_name"] = True
except NoReverseMatch:
    out["demo_pay_name"] = False
demo = ModelSpec(slug="demo", is_demo=True, enabled=True)
out["demo_model_available"] = demo.available
out["demo_model_reason"] = demo.operator_reason
print(json.dumps(out))
"""


def probe(**env: str | None) -> dict:
    result = run(["-c", PROBE], **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_has_no_demo_checkout_url_and_no_demo_model() -> None:
    seen = probe()

    assert seen["demo_allowed"] is False
    assert seen["demo_pay_url"] is False and seen["demo_pay_name"] is False
    assert seen["demo_checkout"] is False and seen["topups_closed"] == ""
    assert seen["demo_model_available"] is False
    assert seen["demo_model_reason"] == "the demo model never answers in production"


def test_production_with_topups_off_starts_without_stripe_and_says_topups_are_off() -> None:
    seen = probe(TOPUPS_ENABLED="false", STRIPE_SECRET_KEY=None, STRIPE_WEBHOOK_SECRET=None)

    assert seen["topups_closed"].startswith("Top-ups are turned off on this server")
    assert seen["demo_pay_url"] is False and seen["demo_checkout"] is False


def test_local_keeps_the_demo_checkout() -> None:
    seen = probe(PANELS_ENV="local", STRIPE_SECRET_KEY=None, STRIPE_WEBHOOK_SECRET=None)

    assert seen["demo_allowed"] is True and seen["demo_pay_url"] is True and seen["demo_checkout"] is True
    assert seen["demo_model_available"] is True


# --- the services refuse too, not only the URL table ------------------------------------


@pytest.fixture(autouse=True)
def fresh_throttle(db):
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice_api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.mark.money
def test_a_demo_topup_is_never_credited_where_the_demo_is_not_allowed(alice, alice_client, settings) -> None:
    # A demo top-up started before the server went to production (a database carried over).
    demo = topup_create(user=alice, amount_cents=100_000, base_url="http://testserver/")
    settings.DEMO_ALLOWED = False

    with pytest.raises(TopupsUnavailable):
        topup_demo_pay(topup=demo)
    result = topup_fulfil(
        session_id=demo.checkout_session_id,
        payment_status="paid",
        amount_total=demo.amount_cents,
        currency="usd",
        metadata={"topup_id": str(demo.pk), "user_id": str(alice.pk)},
    )
    page = alice_client.post(f"/wallet/topup/{demo.pk}/pay/")

    assert result.credited is False
    assert page.status_code == 404
    assert not Entry.objects.exists()
    assert wallet_for_user(user=alice).balance == 0
    demo.refresh_from_db()
    assert demo.credited_at is None


@pytest.mark.money
def test_no_demo_topup_is_started_where_the_demo_is_not_allowed(alice, alice_client, alice_api, settings) -> None:
    settings.DEMO_ALLOWED = False  # and no Stripe key: production refuses to start like this

    with pytest.raises(TopupsUnavailable):
        topup_create(user=alice, amount_cents=500, base_url="http://testserver/")
    page = alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    api = alice_api.post("/api/v1/topups", {"amount_usd": "5"}, format="json")

    assert page.status_code == 503
    assert api.status_code == 503 and api.json()["error"]["code"] == "topups_unavailable"
    assert not Topup.objects.exists() and not Entry.objects.exists()


def test_topups_turned_off_are_said_plainly_on_the_page_and_the_api(alice_client, alice_api, settings) -> None:
    settings.TOPUPS_ENABLED = False

    page = alice_client.get("/wallet/topup/")
    post = alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    api = alice_api.post("/api/v1/topups", {"amount_usd": "5"}, format="json")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Top-ups are turned off on this server" in html
    assert 'id="topup-custom"' not in html and "Buy $5" not in html
    assert "Payments on this server are a demo" not in html
    assert post.status_code == 503 and "Top-ups are turned off on this server" in post.content.decode()
    assert api.status_code == 503
    assert api.json()["error"] == {
        "code": "topups_unavailable",
        "message": "Top-ups are turned off on this server, so no payment can be started. Your balance is unchanged.",
    }
    assert not Topup.objects.exists()


def test_a_frozen_wallet_takes_no_topup(alice, alice_client, alice_api) -> None:
    wallet_freeze(account=wallet_for_user(user=alice), reason="the payment for top-up 7 is disputed")

    page = alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    api = alice_api.post("/api/v1/topups", {"amount_usd": "5"}, format="json")

    assert page.status_code == 403
    assert "Your wallet is frozen (the payment for top-up 7 is disputed)" in page.content.decode()
    assert api.status_code == 403 and api.json()["error"]["code"] == "wallet_frozen"
    assert "Nothing was charged." in api.json()["error"]["message"]
    assert not Topup.objects.exists()


def test_the_demo_model_is_not_in_the_catalog_and_refused_where_not_allowed(
    alice, alice_api, settings, monkeypatch
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice, title="t")
    settings.DEMO_ALLOWED = False
    url = f"/api/v1/conversations/{conversation.pk}/messages"

    models = alice_api.get("/api/v1/models").json()
    rows = models if isinstance(models, list) else models.get("results", models.get("data", []))
    by_name = alice_api.post(url, {"content": "hi", "model": "demo"}, format="json")
    by_auto = alice_api.post(url, {"content": "hi", "model": "auto"}, format="json")

    assert "demo" not in {row["id"] for row in rows}
    assert by_name.status_code in (400, 503) and by_name.json()["error"]["code"] == "model_unavailable"
    assert by_auto.status_code in (400, 503) and by_auto.json()["error"]["code"] == "model_unavailable"
    assert not Message.objects.exists()
    with pytest.raises(ProviderError, match="never answers in production"):
        chat_stream(spec=ModelSpec.objects.get(slug="demo"), messages=[{"role": "user", "content": "hi"}])


def test_load_catalog_makes_no_demo_model_where_not_allowed(settings) -> None:
    ModelSpec.objects.all().delete()
    settings.DEMO_ALLOWED = False

    call_command("load_catalog", verbosity=0)

    assert ModelSpec.objects.exists()
    assert not ModelSpec.objects.filter(is_demo=True).exists()


def test_the_openai_compatible_path_never_calls_the_demo_model_where_not_allowed(settings) -> None:
    import asyncio

    from openai_api.request import CompletionRequest
    from openai_api.upstream import open_stream

    settings.DEMO_ALLOWED = False
    spec = ModelSpec.objects.get(slug="demo")
    request = CompletionRequest.__new__(CompletionRequest)  # never read: refused before any call

    with pytest.raises(ProviderError, match="never answers in production"):
        asyncio.run(open_stream(spec=spec, request=request, max_tokens=5))
