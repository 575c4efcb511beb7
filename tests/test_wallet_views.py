from __future__ import annotations

import pytest

from panels.models import ApiKey
from tests.wallet_helpers import funded_wallet
from wallet.services import wallet_hold, wallet_post

pytestmark = pytest.mark.django_db


def test_wallet_page_empty_state_points_to_top_up(alice_client):
    response = alice_client.get("/wallet/")
    assert response.status_code == 200
    assert b"No credits yet" in response.content


def test_wallet_page_shows_balance_held_and_history(alice, alice_client):
    account = funded_wallet(alice, 2_000_000)
    wallet_post(
        hold=wallet_hold(account=account, amount=5000, idempotency_key="h", reference="message:77"), amount=1234
    )
    wallet_hold(account=account, amount=100, idempotency_key="h2")
    response = alice_client.get("/wallet/")
    body = response.content.decode()
    assert "1,998,766" in body  # balance
    assert "$0.9994" in body  # 1,998,766 credits in dollars
    assert ">100<" in body  # held
    assert "-1,234" in body and "Usage" in body and "Grant" in body
    assert body.index("Usage") < body.index("Grant")  # newest first


def test_wallet_history_is_paginated(alice, alice_client):
    account = funded_wallet(alice, 100_000)
    for i in range(30):
        wallet_post(hold=wallet_hold(account=account, amount=10, idempotency_key=f"h{i}"), amount=1)
    first = alice_client.get("/wallet/").content.decode()
    second = alice_client.get("/wallet/?page=2").content.decode()
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert second.count('class="entry-') == 31 - 25


def test_csv_export_has_every_entry(alice, alice_client):
    account = funded_wallet(alice, 1000)
    wallet_post(hold=wallet_hold(account=account, amount=100, idempotency_key="h"), amount=40)
    response = alice_client.get("/wallet/export.csv")
    assert response["Content-Type"] == "text/csv"
    lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert lines[0].startswith("id,date,kind,credits,usd")
    assert [line.split(",")[2:4] for line in lines[1:]] == [["usage", "-40"], ["grant", "1000"]]


def test_wallet_pages_need_login(client):
    assert client.get("/wallet/").status_code == 302
    assert client.get("/wallet/export.csv").status_code == 302


def test_wallet_api_with_session_and_bearer_key(alice, bob, api_client):
    account = funded_wallet(alice, 3_000_000)
    wallet_hold(account=account, amount=1_000_000, idempotency_key="h")
    funded_wallet(bob, 5)
    _, key = ApiKey.issue(user=alice)
    response = api_client.get("/api/v1/wallet", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert response.json() == {
        "balance": 3_000_000,
        "held": 1_000_000,
        "available": 2_000_000,
        "balance_usd": "1.500000",
        "held_usd": "0.500000",
        "available_usd": "1.000000",
        "frozen": False,
        "frozen_reason": "",
    }
    api_client.force_authenticate(user=bob)
    assert api_client.get("/api/v1/wallet").json()["balance"] == 5


def test_wallet_entries_api_is_newest_first_and_paginated(alice, api_client):
    account = funded_wallet(alice, 1000)
    wallet_post(hold=wallet_hold(account=account, amount=100, idempotency_key="h", reference="message:5"), amount=60)
    api_client.force_login(alice)
    body = api_client.get("/api/v1/wallet/entries?page_size=1").json()
    assert body["count"] == 2
    assert body["results"][0]["kind"] == "usage" and body["results"][0]["credits"] == -60
    assert body["results"][0]["reference"] == "message:5"
    assert body["next"]


def test_wallet_api_errors_are_json(api_client):
    response = api_client.get("/api/v1/wallet")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    response = api_client.get("/api/v1/wallet", HTTP_AUTHORIZATION="Bearer pnl_nope_nope")
    assert response.status_code == 401
    assert "invalid or has been revoked" in response.json()["error"]["message"]
