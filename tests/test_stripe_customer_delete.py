"""Deleting an account deletes its Stripe Customer (the one a card was saved on, holding the
email at Stripe) once the deletion commits; if Stripe can't be reached, a Celery task retries.
The real stripe SDK over HTTP against the local fake (tests/fakes/stripe_api.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe
from django.contrib.auth import get_user_model

from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import stripe_settings
from tests.test_autotopup_stripe import save_card
from wallet import stripe_client
from wallet.models import AutoTopup
from wallet.tasks import CUSTOMER_DELETE_FIRST_RETRY, stripe_customer_delete

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
# The SDK's first try and its retries (wallet/stripe_client.py MAX_NETWORK_RETRIES): a 500 to each
# is Stripe unreachable for one call.
ONE_CALL = 1 + stripe_client.MAX_NETWORK_RETRIES


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


@pytest.fixture
def queued(monkeypatch) -> list[tuple[list, int]]:
    """Customer deletions handed to Celery (args, countdown); tests run the task in-process."""
    calls: list[tuple[list, int]] = []
    monkeypatch.setattr(stripe_customer_delete, "apply_async", lambda args, countdown: calls.append((args, countdown)))
    return calls


def deleted(fake: FakeStripe, customer_id: str) -> bool:
    return fake.customer(customer_id).get("deleted") is True


def test_deleting_the_account_deletes_its_stripe_customer_and_its_cards(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    setting = AutoTopup.objects.get()
    customer_id, method_id = setting.customer_id, setting.payment_method_id
    assert fake.customer(customer_id)["email"] == "alice@example.com"

    answer = alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    assert answer.status_code == 302
    assert not get_user_model().objects.get(pk=alice.pk).is_active
    assert fake.customer(customer_id) == {"id": customer_id, "object": "customer", "deleted": True}
    assert len(fake.calls("DELETE", f"/v1/customers/{customer_id}")) == 1
    assert fake.payment_method(method_id)["customer"] is None
    assert queued == []
    # Asked again (a retried task, or deleted meanwhile in the Dashboard): done, not an error.
    assert stripe_client.customer_delete(customer_id=customer_id) is True
    assert stripe_customer_delete.apply(args=[customer_id]).get() is True


def test_the_fake_refuses_what_stripe_refuses_of_customers(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    customer_id = AutoTopup.objects.get().customer_id
    client = stripe_client._client()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.delete("cus_unknown")
    assert (unknown.value.http_status, unknown.value.code) == (404, "resource_missing")

    assert client.v1.customers.delete(customer_id).to_dict() == {
        "id": customer_id,
        "object": "customer",
        "deleted": True,
    }

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.customers.delete(customer_id)
    assert (again.value.http_status, again.value.code) == (404, "resource_missing")
    assert client.v1.customers.retrieve(customer_id).to_dict()["deleted"] is True  # still retrievable
    # No new payments or card set-ups for a deleted Customer.
    with pytest.raises(stripe.InvalidRequestError) as charge:
        client.v1.payment_intents.create({"amount": 1000, "currency": "usd", "customer": customer_id})
    assert (charge.value.code, charge.value.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as setup:
        client.v1.checkout.sessions.create(
            {"mode": "setup", "currency": "usd", "customer": customer_id, "success_url": "https://x/"}
        )
    assert (setup.value.code, setup.value.param) == ("resource_missing", "customer")


def test_stripe_unreachable_does_not_block_the_deletion_and_a_task_retries(fake, alice, alice_client, queued):
    save_card(alice_client, fake)
    customer_id = AutoTopup.objects.get().customer_id
    fake.fail_next = ONE_CALL  # Stripe is down while the account is deleted

    answer = alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    assert answer.status_code == 302
    assert not get_user_model().objects.get(pk=alice.pk).is_active and not AutoTopup.objects.exists()
    assert not deleted(fake, customer_id)
    assert queued == [([customer_id], CUSTOMER_DELETE_FIRST_RETRY)]

    fake.fail_next = ONE_CALL  # still down at the task's first run: it retries, then gets through
    assert stripe_customer_delete.apply(args=[customer_id]).get() is True

    assert deleted(fake, customer_id)
    assert len(fake.calls("DELETE", f"/v1/customers/{customer_id}")) == 2 * ONE_CALL + 1  # down, down, through
