"""API keys: made on the account page or by `manage.py apikey`, shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
import html
import io
import re

import pytest
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from panels.models import ApiKey

KEY_IN_PAGE = re.compile(r'id="new-api-key"[^>]*value="(pnl_[^"]+)"')


def create_key(client, name: str = "laptop") -> str:
    response = client.post("/accounts/profile/keys/", {"name": name}, follow=True)
    assert response.redirect_chain == [("/accounts/profile/", 302)]
    match = KEY_IN_PAGE.search(response.content.decode())
    assert match, "the new key is not on the page"
    return html.unescape(match.group(1))


def bearer(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


def every_stored_value() -> str:
    """Every row of every table, as text: sessions, caches, logs included."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    # Session rows are signed and base64-encoded: read them as the app would.
    chunks.extend(repr(session.get_decoded()) for session in Session.objects.all())
    return "\n".join(chunks)


def test_key_is_shown_once_on_the_account_page(alice_client, alice):
    created = alice_client.post("/accounts/profile/keys/", {"name": "laptop"})
    # Post/redirect/get: the POST answers with a redirect, so a reload can't post again.
    assert created.status_code == 302 and created["Location"] == "/accounts/profile/"
    response = alice_client.get("/accounts/profile/")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert 'data-copy="new-api-key"' in page and ">Copy</button>" in page
    assert "it will not be shown again" in page
    key = html.unescape(KEY_IN_PAGE.search(page).group(1))
    stored = ApiKey.objects.get(user=alice)
    assert stored.name == "laptop"
    assert key.startswith(f"pnl_{stored.prefix}_")

    again = alice_client.get("/accounts/profile/")  # a reload
    assert again.status_code == 200
    assert key not in again.content.decode()
    assert f"pnl_{stored.prefix}_…" in again.content.decode()
    assert ApiKey.objects.filter(user=alice).count() == 1


def test_the_new_key_cookie_is_signed_for_its_owner(alice_client, alice, bob, client):
    created = alice_client.post("/accounts/profile/keys/", {"name": "laptop"})
    cookie = created.cookies["panels_new_key"]
    assert cookie["httponly"] and cookie["path"] == "/accounts/profile/" and cookie["samesite"] == "Strict"
    # Bob's browser given Alice's cookie shows nothing: it is signed for her account.
    client.force_login(bob)
    client.cookies["panels_new_key"] = cookie.value
    assert "pnl_" not in client.get("/accounts/profile/").content.decode().split("<table", 1)[0]


def test_revoke_asks_for_confirmation_first(alice_client, alice):
    create_key(alice_client)
    stored = ApiKey.objects.get(user=alice)
    page = alice_client.get("/accounts/profile/").content.decode()
    assert f'href="/accounts/profile/keys/{stored.prefix}/revoke/"' in page

    confirm = alice_client.get(f"/accounts/profile/keys/{stored.prefix}/revoke/")

    assert confirm.status_code == 200
    assert b"Revoke API key?" in confirm.content and b"Revoke this key" in confirm.content
    stored.refresh_from_db()
    assert stored.revoked_at is None
    done = alice_client.post(f"/accounts/profile/keys/{stored.prefix}/revoke/", follow=True)
    assert b"revoked: it no longer works" in done.content
    stored.refresh_from_db()
    assert stored.revoked_at is not None


def test_the_database_never_holds_the_key(alice_client, alice):
    key = create_key(alice_client)
    alice_client.get("/accounts/profile/")

    stored = ApiKey.objects.get(user=alice)
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret_part = key.split("_", 2)[2]
    everything = every_stored_value()
    assert stored.key_hash in everything  # the scan does see the ApiKey table
    assert key not in everything
    assert secret_part not in everything


def test_key_authenticates_the_wallet_api(alice_client, alice):
    key = create_key(alice_client)

    response = bearer(key).get("/api/v1/wallet")

    assert response.status_code == 200
    assert response.json()["balance"] == 0
    assert ApiKey.objects.get(user=alice).last_used_at is not None


def test_revoked_key_is_refused_with_a_json_error(alice_client, alice):
    key = create_key(alice_client)
    prefix = ApiKey.objects.get(user=alice).prefix

    response = alice_client.post(f"/accounts/profile/keys/{prefix}/revoke/")

    assert response.status_code == 302
    assert ApiKey.objects.get(user=alice).revoked_at is not None
    refused = bearer(key).get("/api/v1/wallet")
    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/json"
    error = refused.json()["error"]
    assert error["code"] == "not_authenticated"
    assert "revoked" in error["message"]
    assert refused["WWW-Authenticate"] == "Bearer"
    page = alice_client.get("/accounts/profile/").content.decode()
    assert "revoked" in page


@pytest.mark.parametrize(
    "header",
    ["Bearer pnl_deadbeef_notakey", "Bearer nonsense", "Bearer "],
)
def test_bad_keys_are_refused(db, header):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=header)

    response = api.get("/api/v1/wallet")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_right_prefix_with_a_wrong_secret_is_refused(alice_client, alice):
    key = create_key(alice_client)
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")

    assert bearer(forged).get("/api/v1/wallet").status_code == 401


def test_no_credentials_is_401(db):
    response = APIClient().get("/api/v1/wallet")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_bob_cannot_revoke_alices_key(alice_client, alice, bob, client):
    key = create_key(alice_client)
    prefix = ApiKey.objects.get(user=alice).prefix
    client.force_login(bob)

    response = client.post(f"/accounts/profile/keys/{prefix}/revoke/")

    assert response.status_code == 404
    assert ApiKey.objects.get(user=alice).revoked_at is None
    assert bearer(key).get("/api/v1/wallet").status_code == 200


def test_bob_does_not_see_alices_keys(alice_client, alice, bob, client):
    create_key(alice_client, name="alice-laptop")
    client.force_login(bob)

    page = client.get("/accounts/profile/").content.decode()

    assert "alice-laptop" not in page
    assert "No keys yet." in page


def test_key_pages_need_a_login(client, alice):
    key, _ = ApiKey.issue(user=alice, name="x")

    assert client.post("/accounts/profile/keys/", {"name": "x"}).status_code == 302
    assert client.post(f"/accounts/profile/keys/{key.prefix}/revoke/").status_code == 302
    assert ApiKey.objects.filter(user=alice).count() == 1
    assert ApiKey.objects.get(user=alice).revoked_at is None


def test_creating_a_key_is_post_only(alice_client, alice):
    assert alice_client.get("/accounts/profile/keys/").status_code == 405
    assert not ApiKey.objects.filter(user=alice).exists()


def test_manage_command_prints_a_working_key(alice):
    out = io.StringIO()

    call_command("apikey", "create", "ALICE@example.com", "--name", "script", stdout=out)

    key = out.getvalue().strip()
    assert key.startswith("pnl_")
    stored = ApiKey.objects.get(user=alice)
    assert stored.name == "script"
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    response = bearer(key).get("/api/v1/wallet")
    assert response.status_code == 200

    listing = io.StringIO()
    call_command("apikey", "list", "alice@example.com", stdout=listing)
    assert stored.prefix in listing.getvalue()
    assert key not in listing.getvalue()

    call_command("apikey", "revoke", stored.prefix, stdout=io.StringIO())
    assert bearer(key).get("/api/v1/wallet").status_code == 401


def test_manage_command_refuses_an_unknown_email(db):
    with pytest.raises(CommandError, match="No user with email"):
        call_command("apikey", "create", "nobody@example.com", stdout=io.StringIO())
