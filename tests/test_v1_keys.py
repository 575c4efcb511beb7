"""API keys for tools: a spend limit per day, per month or in total, an optional expiry,
and what each key spent, on the account page and in GET /api/v1/keys."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from chat.models import ModelSpec
from openai_api.models import ApiCall, KeyHold
from panels.models import ApiKey
from tests.wallet_helpers import funded_wallet
from wallet.services import wallet_for_user, wallet_hold, wallet_post, wallet_void

pytestmark = pytest.mark.django_db


def add_call(key: ApiKey, status: str, *, cost: int | None = None, reserved: int = 0, days_ago: int = 0) -> None:
    """A /v1 call of `key` as the ledger has it: its hold, posted, pending or voided."""
    created_at = timezone.now() - dt.timedelta(days=days_ago)
    call = ApiCall.objects.create(
        user=key.user,
        api_key=key,
        model=ModelSpec.objects.get(slug="demo"),
        requested_model="demo",
        status=status,
        cost=cost,
        reserved=reserved,
        created_at=created_at,
    )
    if status == ApiCall.Status.REFUSED:
        return  # refused before any hold
    hold = wallet_hold(
        account=wallet_for_user(user=key.user),
        amount=max(reserved, cost or 0, 1),
        idempotency_key=f"apicall:{call.pk}",
    )
    if status in (ApiCall.Status.DONE, ApiCall.Status.CANCELLED):
        wallet_post(hold=hold, amount=cost)
    elif status == ApiCall.Status.FAILED:
        wallet_void(hold=hold)
    KeyHold.objects.create(api_key=key, hold=hold, created_at=created_at)


def test_a_key_made_on_the_account_page_carries_its_limit_and_expiry(alice_client, alice):
    response = alice_client.post(
        "/accounts/profile/keys/",
        {"name": "tool", "limit_usd": "0.50", "limit_period": "day", "expires_days": "7"},
        follow=True,
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(user=alice)
    assert (key.spend_limit, key.limit_period) == (1_000_000, "day")
    assert dt.timedelta(days=6, hours=23) < key.expires_at - timezone.now() <= dt.timedelta(days=7)
    assert "1,000,000 credits per day" in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("limit_usd", "lots", "amount in dollars"), ("limit_usd", "-1", "between"), ("expires_days", "0", "1 to 3650")],
)
def test_a_bad_limit_or_expiry_is_refused_with_a_message(alice_client, alice, field, value, says):
    response = alice_client.post("/accounts/profile/keys/", {"name": "x", field: value})
    assert response.status_code == 400 and says in response.content.decode()
    assert not ApiKey.objects.filter(user=alice).exists()


def test_the_limit_of_a_key_can_be_changed_and_only_by_its_owner(alice_client, alice, bob):
    key, _ = ApiKey.issue(user=alice)
    response = alice_client.post(
        f"/accounts/profile/keys/{key.prefix}/limit/", {"limit_usd": "2", "limit_period": "month"}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.spend_limit, key.limit_period) == (4_000_000, "month")
    bobs, _ = ApiKey.issue(user=bob)
    assert alice_client.post(f"/accounts/profile/keys/{bobs.prefix}/limit/", {"limit_usd": "1"}).status_code == 404


def test_per_key_usage_in_the_api_and_on_the_account_page(alice_client, alice):
    key, secret = ApiKey.issue(user=alice, name="tool", spend_limit=10_000, limit_period=ApiKey.LimitPeriod.DAY)
    other, _ = ApiKey.issue(user=alice, name="other")
    funded_wallet(alice, 1_000_000)
    add_call(key, ApiCall.Status.DONE, cost=1_000)
    add_call(key, ApiCall.Status.CANCELLED, cost=200)
    add_call(key, ApiCall.Status.STREAMING, reserved=3_000)  # running: its hold counts
    add_call(key, ApiCall.Status.FAILED, cost=0)
    add_call(key, ApiCall.Status.REFUSED, cost=0)  # refusals are not calls
    add_call(key, ApiCall.Status.DONE, cost=5_000, days_ago=2)  # outside today's window
    add_call(other, ApiCall.Status.DONE, cost=7)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    rows = {row["name"]: row for row in api.get("/api/v1/keys").json()}

    assert rows["tool"] | {} == {
        **rows["tool"],
        "calls": 5,
        "spent_total": 9_200,
        "spent_in_period": 4_200,
        "remaining": 5_800,
        "spend_limit": 10_000,
        "limit_period": "day",
        "active": True,
    }
    assert (rows["other"]["spent_total"], rows["other"]["remaining"]) == (7, None)
    page = alice_client.get("/accounts/profile/").content.decode()
    assert "9,200 in 5 calls; 4,200 this day" in page and "5,800 left" in page


def test_an_expired_key_is_refused_everywhere_and_listed_as_expired(alice_client, alice):
    key, secret = ApiKey.issue(user=alice, expires_at=timezone.now() - dt.timedelta(minutes=1))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/wallet").status_code == 401
    assert alice_client.get("/api/v1/keys").json()[0]["active"] is False
    assert "expired" in alice_client.get("/accounts/profile/").content.decode()


def test_the_manage_command_makes_a_limited_expiring_key(alice):
    call_command("apikey", "create", "alice@example.com", "--limit", "5000", "--period", "month", "--expires-days", "3",
                 stdout=io.StringIO())  # fmt: skip
    key = ApiKey.objects.get(user=alice)
    assert (key.spend_limit, key.limit_period) == (5000, "month") and key.expires_at > timezone.now()
    listing = io.StringIO()
    call_command("apikey", "list", "alice@example.com", stdout=listing)
    assert "5,000 credits per month" in listing.getvalue()
