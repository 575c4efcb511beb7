"""Staff sign in to /admin/ through the site's login: its rate limits apply, and a staff
member who enrolled an authenticator (allauth.mfa: TOTP and recovery codes) must give
the second factor before the admin opens."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a long admin passphrase 7"


@pytest.fixture(autouse=True)
def fresh_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ops(db):
    user = get_user_model().objects.create_superuser(username="ops", email="ops@example.com", password=PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def now_code(secret: str) -> str:
    counters = list(yield_hotp_counters_from_time())  # this period, with the tolerance either side
    return format_hotp_value(hotp_value(secret, counters[len(counters) // 2]))


def login(client: Client, password: str = PASSWORD):
    return client.post("/accounts/login/", {"login": "ops@example.com", "password": password})


def test_the_admin_login_page_sends_people_to_the_site_login(client) -> None:
    response = client.get("/admin/login/?next=/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_a_password_posted_to_the_admin_login_signs_no_one_in(client, ops) -> None:
    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD, "next": "/admin/"})

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/admin/").status_code == 302  # still signed out


def test_failed_admin_logins_meet_the_login_rate_limit(client, ops) -> None:
    for attempt in range(5):
        assert "are not correct" in login(client, f"wrong {attempt}").content.decode()

    # RATE_LOGIN_FAILED (5/5m per email): now even the right password waits.
    assert "Too many failed login attempts" in login(client).content.decode()
    assert client.get("/admin/").status_code == 302


def test_staff_without_a_second_factor_reach_the_admin_after_the_site_login(client, ops) -> None:
    assert login(client).status_code == 302

    assert client.get("/admin/").status_code == 200


def test_staff_with_an_authenticator_must_give_its_code(client, ops) -> None:
    secret = generate_totp_secret()
    TOTP.activate(ops, secret)

    response = login(client)

    assert response.status_code == 302 and response["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/admin/").status_code == 302  # the password alone opens nothing
    assert client.post("/accounts/2fa/authenticate/", {"code": "000000"}).status_code == 200  # wrong code: the form
    assert client.get("/admin/").status_code == 302

    done = client.post("/accounts/2fa/authenticate/", {"code": now_code(secret)})

    assert done.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_recovery_code_works_once_in_place_of_the_app(client, ops) -> None:
    TOTP.activate(ops, generate_totp_secret())
    codes = RecoveryCodes.activate(ops).get_unused_codes()

    login(client)
    assert client.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 302
    assert client.get("/admin/").status_code == 200

    other = Client()
    login(other)
    assert other.post("/accounts/2fa/authenticate/", {"code": codes[0]}).status_code == 200  # used up
    assert other.get("/admin/").status_code == 302


def test_staff_enrol_from_the_account_page(client, ops) -> None:
    assert login(client).status_code == 302  # a fresh sign-in: enrolling asks for a recent one
    profile = client.get("/accounts/profile/").content.decode()
    assert 'href="/accounts/2fa/"' in profile and "protect it with a second factor" in profile

    asked = client.get("/accounts/2fa/totp/activate/")
    if asked.status_code == 302:  # allauth asks for the password again before a security change
        assert asked["Location"].startswith("/accounts/reauthenticate/")
        assert client.post(asked["Location"], {"password": PASSWORD}).status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    activated = client.post("/accounts/2fa/totp/activate/", {"code": now_code(secret)})

    assert activated.status_code == 302
    assert Authenticator.objects.filter(user=ops, type=Authenticator.Type.TOTP).exists()
    assert Authenticator.objects.filter(user=ops, type=Authenticator.Type.RECOVERY_CODES).exists()
