from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.wallet_helpers import funded_wallet
from wallet.models import Entry

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser(username="ops", email="ops@example.com", password="x")
    client.force_login(admin)
    return client


def test_admin_grant_needs_a_reason_and_writes_an_entry(admin_client, alice):
    account = funded_wallet(alice, 0)
    url = f"/admin/wallet/account/{account.pk}/grant/"
    assert admin_client.get(url).status_code == 200
    refused = admin_client.post(url, {"credits": "5000", "reason": "", "key": "k1"})
    assert refused.status_code == 200 and b"This field is required" in refused.content
    assert not Entry.objects.exists()
    response = admin_client.post(url, {"credits": "5000", "reason": "goodwill", "key": "k1"})
    assert response.status_code == 302
    admin_client.post(url, {"credits": "5000", "reason": "goodwill", "key": "k1"})  # a double submit
    entry = Entry.objects.get()
    assert (entry.kind, entry.amount, entry.memo) == ("grant", 5000, "goodwill (by ops)")
    account.refresh_from_db()
    assert account.balance == 5000


def test_admin_adjustment_takes_credits_back(admin_client, alice):
    account = funded_wallet(alice, 1000)
    admin_client.post(f"/admin/wallet/account/{account.pk}/grant/", {"credits": "-300", "reason": "typo", "key": "k2"})
    account.refresh_from_db()
    assert account.balance == 700
    assert Entry.objects.filter(kind="adjustment", amount=300).exists()


def test_admin_entries_are_read_only(admin_client, alice):
    funded_wallet(alice, 1000)
    entry = Entry.objects.get()
    assert admin_client.get("/admin/wallet/entry/").status_code == 200
    assert admin_client.get("/admin/wallet/entry/add/").status_code == 403
    assert admin_client.post(f"/admin/wallet/entry/{entry.pk}/delete/").status_code == 403
    assert Entry.objects.filter(pk=entry.pk).exists()


def test_staff_without_permission_cannot_grant(client, alice):
    staff = get_user_model().objects.create_user(username="s", email="s@example.com", password="x", is_staff=True)
    client.force_login(staff)
    account = funded_wallet(alice, 0)
    response = client.post(f"/admin/wallet/account/{account.pk}/grant/", {"credits": "5", "reason": "x", "key": "k"})
    assert response.status_code == 403
    assert not Entry.objects.exists()
