"""Wording: people are named by their email, emails by the site's name, and every
"contact us" says where (SUPPORT_EMAIL)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.core.cache import cache

from tests.wallet_helpers import funded_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def test_signing_in_names_the_email_not_the_username(client, alice):
    response = client.post(
        "/accounts/login/", {"login": "alice@example.com", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Successfully signed in as alice@example.com." in shown
    assert not any("as alice." in m for m in shown)


def test_emails_greet_with_the_site_name(client, settings):
    settings.SITE_NAME = "Panels Test"
    settings.SITE_URL = "https://panels.example.com"
    settings.SUPPORT_EMAIL = "help@panels.example.com"
    client.post(
        "/accounts/signup/",
        {
            "email": "newcomer@example.com",
            "password1": "a long and unusual passphrase 7",
            "password2": "a long and unusual passphrase 7",
        },
    )
    (message,) = mail.outbox
    assert message.body.startswith("Hello from Panels Test!")
    assert "Hello from testserver" not in message.body and "Hello from 127.0.0.1" not in message.body
    assert "Thank you for using Panels Test!\nhttps://panels.example.com" in message.body
    assert "help@panels.example.com" in message.body
    assert "newcomer@example.com" in message.body


def test_contact_us_gives_the_support_address(alice_client, alice, settings):
    settings.SUPPORT_EMAIL = "help@panels.example.com"
    account = funded_wallet(alice, 2_000_000)
    link = '<a href="mailto:help@panels.example.com">help@panels.example.com</a>'
    assert link in alice_client.get("/accounts/profile/delete/").content.decode()
    account.frozen_reason = "a disputed payment"
    account.save()
    assert link in alice_client.get("/wallet/").content.decode()
