"""The top-up pages: choose an amount, the demo checkout, Stripe Checkout and the done page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import balance, entry_count, event, post_event, stripe_settings
from wallet.models import Entry, Topup
from wallet.topup_views import TopupThrottle

# The database is set up before any autouse fixture that reads it.
pytestmark = pytest.mark.django_db

FIVE_DOLLARS = 10_000_000


@pytest.fixture(autouse=True)
def fresh_throttle(db) -> Iterator[None]:
    # Throttle counters live in the shared cache table, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def test_topup_page_needs_a_login(client: Client) -> None:
    response = client.get("/wallet/topup/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_topup_page_shows_packs_with_their_credits_and_the_demo_label(alice_client: Client) -> None:
    response = alice_client.get("/wallet/topup/")

    assert response.status_code == 200
    html = response.content.decode()
    for usd, credits in (("1", "2,000,000"), ("5", "10,000,000"), ("20", "40,000,000")):
        assert f'name="amount_usd" value="{usd}"' in html
        assert f"{credits} credits" in html
    assert "no card is charged" in html
    assert '<label for="id_amount_usd">' in html


AMBIGUOUS_HELP = "Write the amount without a thousands separator, for example 1000 or 12.50."


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("0.99", "The smallest top-up is $1.00."),
        ("1000.01", "The largest top-up is $1,000.00."),
        ("1.0001", "Use whole cents: at most two digits after the decimal point."),
        # A lone separator with three digits after it reads two ways: refused, not guessed.
        ("5.001", "We can&#x27;t tell whether 5.001 means thousands or a decimal part. " + AMBIGUOUS_HELP),
        ("$1,000", "We can&#x27;t tell whether 1,000 means thousands or a decimal part. " + AMBIGUOUS_HELP),
        ("1.000", "We can&#x27;t tell whether 1.000 means thousands or a decimal part. " + AMBIGUOUS_HELP),
        ("1 000", "Enter the amount as a number of US dollars, for example 10 or 12.50."),
        ("1,2,3", "Enter the amount as a number of US dollars, for example 10 or 12.50."),
        ("abc", "Enter the amount as a number of US dollars, for example 10 or 12.50."),
        ("-5", "The smallest top-up is $1.00."),
        ("0", "The smallest top-up is $1.00."),
        ("", "Enter an amount in US dollars, for example 10 or 12.50."),
        ("NaN", "Enter the amount as a number of US dollars, for example 10 or 12.50."),
    ],
)
def test_custom_amounts_outside_the_rules_are_refused_next_to_the_field(
    alice_client: Client, typed: str, message: str
) -> None:
    response = alice_client.post("/wallet/topup/", {"amount_usd": typed})

    assert response.status_code == 400
    html = response.content.decode()
    assert f'<p class="field-error" id="amount-error">{message}</p>' in html
    assert 'aria-invalid="true"' in html
    assert not Topup.objects.exists()


@pytest.mark.parametrize(
    ("typed", "cents"),
    [
        ("1", 100),
        ("12.50", 1250),
        ("999.99", 99_999),
        # A decimal comma is a decimal point, never a thousands separator to strip.
        ("2,50", 250),
        ("9,99", 999),
        ("2,5", 250),
        # Grouped thousands, when the grouping shows which convention it is.
        ("$1,000.00", 100_000),
        ("1.000,00", 100_000),
        ("$ 7 ", 700),
    ],
)
def test_custom_amounts_within_the_rules_start_a_topup(alice_client: Client, alice, typed: str, cents: int) -> None:
    response = alice_client.post("/wallet/topup/", {"amount_usd": typed})

    topup = Topup.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"http://testserver/wallet/topup/{topup.pk}/pay/"
    assert (topup.user, topup.amount_cents, topup.credits) == (alice, cents, cents * 20_000)
    assert (topup.provider, topup.status, topup.checkout_session_id) == ("demo", "created", f"demo_{topup.pk}")


def test_demo_checkout_is_labelled_and_pay_credits_once(alice_client: Client, alice) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    page = alice_client.get(f"/wallet/topup/{topup.pk}/pay/")
    assert page.status_code == 200
    assert b"demo \xe2\x80\x94 no card is charged" in page.content

    paid = alice_client.post(f"/wallet/topup/{topup.pk}/pay/", follow=True)
    again = alice_client.post(f"/wallet/topup/{topup.pk}/pay/", follow=True)

    assert paid.redirect_chain[-1][0] == f"/wallet/topup/{topup.pk}/done/"
    assert b"10,000,000 credits were added" in paid.content
    assert again.status_code == 200
    assert balance(alice) == FIVE_DOLLARS
    (entry,) = Entry.objects.all()
    assert (entry.kind, entry.idempotency_key) == (Entry.Kind.TOPUP, f"topup:demo_{topup.pk}")
    topup.refresh_from_db()
    assert topup.status == Topup.Status.PAID


def test_another_users_topup_is_a_404(alice_client: Client, bob) -> None:
    bob_client = Client()
    bob_client.force_login(bob)
    bob_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    assert alice_client.get(f"/wallet/topup/{topup.pk}/pay/").status_code == 404
    assert alice_client.post(f"/wallet/topup/{topup.pk}/pay/").status_code == 404
    assert alice_client.get(f"/wallet/topup/{topup.pk}/done/").status_code == 404
    assert entry_count() == 0


def test_cancel_of_no_topup_of_yours_changes_nothing(alice_client: Client, bob) -> None:
    bob_client = Client()
    bob_client.force_login(bob)
    bob_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    response = alice_client.get(f"/wallet/topup/?cancelled={topup.pk}")

    assert response.status_code == 200 and b"topup-cancelled" not in response.content
    assert Topup.objects.get().status == Topup.Status.CREATED


def test_starting_topups_is_rate_limited(alice_client: Client, monkeypatch) -> None:
    monkeypatch.setattr(TopupThrottle, "rate", "2/min", raising=False)

    codes = [alice_client.post("/wallet/topup/", {"amount_usd": "1"}).status_code for _ in range(3)]

    assert codes == [302, 302, 429]
    assert Topup.objects.count() == 2


def test_wallet_page_lists_topups_and_links_to_the_topup_page(alice_client: Client, alice) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()
    alice_client.post(f"/wallet/topup/{topup.pk}/pay/")
    Topup.objects.filter(pk=topup.pk).update(receipt_url="https://pay.stripe.com/receipts/payment/x")

    html = alice_client.get("/wallet/").content.decode()

    assert f'id="topup-{topup.pk}"' in html
    assert "$5.00" in html and "10,000,000" in html and "Paid" in html
    assert 'href="https://pay.stripe.com/receipts/payment/x"' in html
    assert 'class="button" href="/wallet/topup/">Top up</a>' in html
    assert 'id="header-topup"' in html


def test_with_stripe_the_page_redirects_to_checkout(fake: FakeStripe, alice_client: Client, alice) -> None:
    response = alice_client.post("/wallet/topup/", {"amount_usd": "5"})

    topup = Topup.objects.get()
    session = fake.session(topup.checkout_session_id)
    assert response.status_code == 302
    assert response["Location"] == session["url"] == topup.checkout_url
    assert topup.provider == Topup.Provider.STRIPE
    assert session["client_reference_id"] == str(alice.pk)
    assert session["metadata"] == {"topup_id": str(topup.pk), "user_id": str(alice.pk), "credits": "10000000"}
    assert (
        session["success_url"] == f"http://testserver/wallet/topup/{topup.pk}/done/?session_id={{CHECKOUT_SESSION_ID}}"
    )
    assert session["cancel_url"] == f"http://testserver/wallet/topup/?cancelled={topup.pk}"
    # The demo checkout is not available for a Stripe top-up.
    assert alice_client.post(f"/wallet/topup/{topup.pk}/pay/").status_code == 404
    assert entry_count() == 0


def test_when_stripe_is_down_nothing_is_charged_and_the_page_says_so(fake: FakeStripe, alice_client: Client) -> None:
    fake.fail_next = 10

    response = alice_client.post("/wallet/topup/", {"amount_usd": "5"})

    assert response.status_code == 503
    assert b"nothing was charged" in response.content
    assert Topup.objects.get().status == Topup.Status.FAILED


def test_done_page_before_payment_credits_nothing(fake: FakeStripe, alice_client: Client) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()

    response = alice_client.get(f"/wallet/topup/{topup.pk}/done/?session_id={topup.checkout_session_id}")

    assert response.status_code == 200
    assert b"Awaiting payment" in response.content
    assert entry_count() == 0


@pytest.mark.money
def test_done_page_credits_once_then_the_webhook_does_nothing(
    transactional_db, fake: FakeStripe, alice_client: Client, alice
) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()
    session = fake.mark_paid(topup.checkout_session_id)
    # A forged session id in the query is not trusted: the stored one is what's checked.
    url = f"/wallet/topup/{topup.pk}/done/?session_id=cs_test_forged"

    first = alice_client.get(url)
    second = alice_client.get(url)
    hook = post_event(Client(), event("checkout.session.completed", session))

    assert first.status_code == second.status_code == 200
    assert b"10,000,000 credits were added" in second.content
    assert b"Stripe receipt" in second.content
    assert hook.json()["outcome"] == f"top-up {topup.pk} already credited"
    assert balance(alice) == FIVE_DOLLARS
    assert entry_count() == 1
    # The retrieve happened with the stored session id.
    assert {c["path"] for c in fake.calls("GET", "/v1/checkout/sessions/")} == {
        f"/v1/checkout/sessions/{topup.checkout_session_id}"
    }


def test_done_page_refuses_a_session_that_does_not_match_its_topup(fake: FakeStripe, alice_client: Client) -> None:
    alice_client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()
    fake.mark_paid(topup.checkout_session_id)
    fake.sessions[topup.checkout_session_id]["amount_total"] = 100

    response = alice_client.get(f"/wallet/topup/{topup.pk}/done/")

    assert response.status_code == 200
    assert b"does not match the top-up" in response.content
    assert entry_count() == 0


@pytest.mark.money
def test_no_transaction_is_open_while_stripe_is_called(transactional_db, fake: FakeStripe, alice, monkeypatch) -> None:
    from django.db import connection

    from wallet import stripe_client

    seen: list[tuple[str, bool]] = []
    for name in ("checkout_session_create", "checkout_session_retrieve", "payment_info"):
        real = getattr(stripe_client, name)

        def watched(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, connection.in_atomic_block))
            return _real(*args, **kwargs)

        monkeypatch.setattr(stripe_client, name, watched)
    client = Client()
    client.force_login(alice)

    client.post("/wallet/topup/", {"amount_usd": "5"})
    topup = Topup.objects.get()
    fake.mark_paid(topup.checkout_session_id)
    client.get(f"/wallet/topup/{topup.pk}/done/")

    assert [name for name, _ in seen] == ["checkout_session_create", "checkout_session_retrieve", "payment_info"]
    assert not any(in_atomic for _, in_atomic in seen)
    assert balance(alice) == FIVE_DOLLARS
