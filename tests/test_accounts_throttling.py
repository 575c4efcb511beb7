"""Login and signup throttling (allauth's ACCOUNT_RATE_LIMITS on the shared database cache).

login_failed is "10/m/ip,5/5m/key": five wrong passwords for one email lock that email
for five minutes, whatever the password; ten failures from one address lock the address.
"""

from __future__ import annotations

import time

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.cache import cache

PASSWORD = "correct horse battery staple"
TOO_MANY = "Too many failed login attempts"
WRONG = "The email address and/or password you specified are not correct."


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    # Runs before the personas are made: a cheap hasher keeps a dozen logins fast.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_counters(db):
    # Transactional tests elsewhere commit their rate-limit counters to the cache table;
    # start every count from zero (the test's transaction undoes this afterwards).
    cache.clear()


def login(client, email: str, password: str):
    return client.post("/accounts/login/", {"login": email, "password": password})


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def later(monkeypatch, seconds: float) -> None:
    """Move the clock the rate limiter reads forward, as if the window had passed."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def test_five_failures_lock_the_email_even_for_the_right_password(client, alice, monkeypatch):
    for attempt in range(5):
        response = login(client, "alice@example.com", f"wrong {attempt}")
        assert response.status_code == 200
        assert WRONG in response.content.decode()

    sixth = login(client, "alice@example.com", "wrong again")
    assert sixth.status_code in (200, 429)
    assert TOO_MANY in sixth.content.decode()

    right = login(client, "alice@example.com", PASSWORD)
    assert right.status_code in (200, 429)
    assert TOO_MANY in right.content.decode()
    assert not logged_in(client)
    assert client.get("/chat/").status_code == 302

    # Four minutes on, still locked; after the five-minute window, the right password works.
    later(monkeypatch, 4 * 60)
    assert TOO_MANY in login(client, "alice@example.com", PASSWORD).content.decode()
    assert not logged_in(client)
    later(monkeypatch, 5 * 60 + 1)
    response = login(client, "alice@example.com", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/chat/"
    assert logged_in(client)


def test_the_lock_ignores_the_case_of_the_email(client, alice):
    for attempt in range(5):
        login(client, "alice@example.com", f"wrong {attempt}")

    response = login(client, "ALICE@Example.com", PASSWORD)

    assert TOO_MANY in response.content.decode()
    assert not logged_in(client)


def test_the_error_is_announced_next_to_the_form(client, alice):
    for attempt in range(6):
        response = login(client, "alice@example.com", f"wrong {attempt}")

    page = response.content.decode()
    assert '<div class="alert error" role="alert">' in page
    assert page.index(TOO_MANY) > page.index('<form class="stacked')


def test_a_locked_email_does_not_lock_other_accounts(client, alice, bob):
    for attempt in range(6):
        login(client, "alice@example.com", f"wrong {attempt}")

    response = login(client, "bob@example.com", PASSWORD)

    assert response.status_code == 302
    assert logged_in(client)


def test_a_successful_login_does_not_reset_the_failure_count(client, alice):
    # Otherwise an attacker who knows one password could interleave successes to keep guessing.
    for attempt in range(4):
        login(client, "alice@example.com", f"wrong {attempt}")
    assert login(client, "alice@example.com", PASSWORD).status_code == 302
    client.post("/accounts/logout/")

    login(client, "alice@example.com", "wrong 5")
    response = login(client, "alice@example.com", PASSWORD)

    assert TOO_MANY in response.content.decode()


def test_ten_failures_from_one_address_lock_the_address(client, alice):
    for n in range(10):
        response = login(client, f"nobody{n}@example.com", "whatever it is")
        assert WRONG in response.content.decode()

    response = login(client, "alice@example.com", PASSWORD)

    assert TOO_MANY in response.content.decode()
    assert not logged_in(client)
    # Another address is not affected.
    response = client.post(
        "/accounts/login/", {"login": "alice@example.com", "password": PASSWORD}, REMOTE_ADDR="192.0.2.7"
    )
    assert response.status_code == 302


def test_signup_is_throttled_per_address(client, db):
    for _ in range(20):
        response = client.post("/accounts/signup/", {"email": "", "password1": "", "password2": ""})
        assert response.status_code == 200

    response = client.post(
        "/accounts/signup/", {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )

    assert response.status_code == 429
    assert "Too many requests" in response.content.decode()
    assert 'class="site-header"' in response.content.decode()  # the 429 page is in the site frame
    assert not get_user_model().objects.filter(email="carol@example.com").exists()
    assert not EmailAddress.objects.filter(email="carol@example.com").exists()

    other = client.post(
        "/accounts/signup/",
        {"email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR="192.0.2.8",
    )
    assert other.status_code == 302
    assert get_user_model().objects.filter(email="carol@example.com").exists()


def test_signup_window_passes(client, db, monkeypatch):
    for _ in range(21):
        response = client.post("/accounts/signup/", {"email": "", "password1": "", "password2": ""})
    assert response.status_code == 429

    later(monkeypatch, 61)
    response = client.post(
        "/accounts/signup/", {"email": "dave@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )

    assert response.status_code == 302
    assert get_user_model().objects.filter(email="dave@example.com").exists()
