"""allauth's account flows, end to end through our pages: sign-up and email confirmation,
login, logout, password reset and change, email management."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 42"
LINK = re.compile(r"https?://[^/\s]+(/accounts/\S+)")


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def link_in(message) -> str:
    match = LINK.search(message.body)
    assert match, message.body
    return match.group(1)


def in_frame(response) -> str:
    page = response.content.decode()
    assert '<header class="site-header">' in page
    return page


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_signup_sends_a_confirmation_and_does_not_log_in(client, db):
    response = client.post(
        "/accounts/signup/", {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert not logged_in(client)
    page = in_frame(client.get(response["Location"]))
    assert "Verify Your Email Address" in page
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["carol@example.com"]
    assert mail.outbox[0].subject.startswith("[Panels] ")
    user = get_user_model().objects.get(email="carol@example.com")
    assert user.has_usable_password()
    assert not EmailAddress.objects.get(user=user).verified


def test_confirmation_link_shows_a_form_then_confirms_and_logs_in(client, db):
    client.post("/accounts/signup/", {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD})
    url = link_in(mail.outbox[0])

    # GET only shows the page (mail scanners follow links); the POST confirms.
    page = in_frame(client.get(url))
    assert not EmailAddress.objects.get(email="carol@example.com").verified
    assert re.search(rf'<form[^>]*method="post"[^>]*action="{re.escape(url)}"', page)

    response = client.post(url)

    assert response.status_code == 302
    assert response["Location"] == "/chat/"
    assert EmailAddress.objects.get(email="carol@example.com").verified
    assert logged_in(client)


def test_a_bad_confirmation_key_is_explained(client, db):
    page = in_frame(client.get("/accounts/confirm-email/not-a-real-key/"))

    assert "expired or is invalid" in page


def test_unconfirmed_user_cannot_log_in(client, db):
    make_user("erin@example.com", verified=False)

    response = client.post("/accounts/login/", {"login": "erin@example.com", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert not logged_in(client)
    assert len(mail.outbox) == 1  # a fresh confirmation is sent


def test_login_lands_on_the_chat(client, alice):
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/chat/"
    assert logged_in(client)


def test_login_honours_a_safe_next_and_ignores_an_unsafe_one(client, alice):
    response = client.post("/accounts/login/?next=/wallet/", {"login": "alice@example.com", "password": PASSWORD})
    assert response["Location"] == "/wallet/"
    client.post("/accounts/logout/")

    response = client.post(
        "/accounts/login/?next=https://evil.example/", {"login": "alice@example.com", "password": PASSWORD}
    )
    assert response["Location"] == "/chat/"


def test_pages_that_need_a_login_send_to_the_login_page(client, db):
    for url in ("/chat/", "/wallet/", "/accounts/profile/", "/accounts/email/", "/accounts/password/change/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url


def test_logout_is_a_post_and_lands_home(alice_client):
    response = alice_client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert not logged_in(alice_client)


def test_password_reset_by_email(client, alice):
    page = in_frame(client.get("/accounts/password/reset/"))
    assert '<label for="id_email">' in page

    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"
    assert len(mail.outbox) == 1
    url = link_in(mail.outbox[0])
    assert "/accounts/password/reset/key/" in url

    # The key moves into the session and out of the address bar before the form is shown.
    response = client.get(url)
    assert response.status_code == 302
    form_url = response["Location"]
    page = in_frame(client.get(form_url))
    assert '<label for="id_password1">' in page

    response = client.post(form_url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert "Your password is now changed." in in_frame(client.get(response["Location"]))

    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD}).status_code == 200
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": NEW_PASSWORD})
    assert response.status_code == 302

    # The link is single-use.
    client.post("/accounts/logout/")
    response = client.get(url)
    assert "Bad Token" in in_frame(client.get(response["Location"]) if response.status_code == 302 else response)


def test_password_reset_for_an_unknown_email_tells_nothing(client, db):
    response = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"


def test_password_change(alice_client, alice):
    response = alice_client.post(
        "/accounts/password/change/",
        {"oldpassword": "wrong", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert 'id="id_oldpassword_error"' in response.content.decode()

    response = alice_client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert logged_in(alice_client)


def test_email_management(alice_client, alice):
    response = alice_client.post("/accounts/email/", {"action_add": "", "email": "alice.work@example.com"})

    assert response.status_code == 302
    added = EmailAddress.objects.get(email="alice.work@example.com")
    assert added.user == alice
    assert not added.verified
    assert len(mail.outbox) == 1
    page = in_frame(alice_client.get("/accounts/email/"))
    assert "alice.work@example.com" in page
    assert "Unverified" in page

    # An unverified address can't become primary.
    alice_client.post("/accounts/email/", {"action_primary": "", "email": "alice.work@example.com"})
    assert EmailAddress.objects.get(email="alice@example.com").primary

    # Confirm it through the link, then make it primary.
    url = link_in(mail.outbox[0])
    alice_client.post(url)
    assert EmailAddress.objects.get(email="alice.work@example.com").verified
    alice_client.post("/accounts/email/", {"action_primary": "", "email": "alice.work@example.com"})
    alice.refresh_from_db()
    assert alice.email == "alice.work@example.com"

    alice_client.post("/accounts/email/", {"action_remove": "", "email": "alice@example.com"})
    assert not EmailAddress.objects.filter(email="alice@example.com").exists()


def test_an_email_taken_by_another_account_cannot_be_claimed(alice_client, alice, bob):
    # allauth does not reveal that the address is taken (no account enumeration)...
    alice_client.post("/accounts/email/", {"action_add": "", "email": "bob@example.com"})

    # ...and the address stays bob's: alice's copy is unverified and can't be confirmed or made primary.
    claim = EmailAddress.objects.get(user=alice, email="bob@example.com")
    assert not claim.verified
    for message in mail.outbox:
        alice_client.post(link_in(message))
    alice_client.post("/accounts/email/", {"action_primary": "", "email": "bob@example.com"})
    claim.refresh_from_db()
    alice.refresh_from_db()
    assert not claim.verified
    assert alice.email == "alice@example.com"
    assert EmailAddress.objects.get(email="bob@example.com", verified=True).user == bob


def test_signup_with_a_taken_email_does_not_create_a_second_account(client, alice):
    client.post("/accounts/signup/", {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert get_user_model().objects.filter(email__iexact="alice@example.com").count() == 1
