"""The site frame: header, security headers, CSRF on account forms, account pages, account deletion."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from panels.models import ApiKey
from wallet.services import wallet_for_user, wallet_grant

PASSWORD = "correct horse battery staple"

FRAME_PAGES = [
    "/",
    "/chat/",
    "/wallet/",
    "/pricing/",
    "/accounts/profile/",
    "/accounts/profile/delete/",
    "/accounts/email/",
    "/accounts/password/change/",
    "/accounts/password/reset/",
    "/accounts/logout/",
]
ANONYMOUS_PAGES = [
    "/",
    "/pricing/",
    "/accounts/login/",
    "/accounts/signup/",
    "/accounts/password/reset/",
    "/accounts/password/reset/done/",
    "/accounts/confirm-email/",
]


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def header(response) -> str:
    page = response.content.decode()
    return page[page.index('<header class="site-header">') : page.index("</header>")]


# Header


def test_anonymous_header_offers_log_in_and_sign_up(client, db):
    response = client.get("/")

    assert response.status_code == 200
    top = header(response)
    for href, text in [
        ("/chat/", "Chat"),
        ("/wallet/", "Wallet"),
        ("/pricing/", "Pricing"),
        ("/accounts/login/", "Log in"),
        ("/accounts/signup/", "Sign up"),
    ]:
        assert re.search(rf'<a[^>]*href="{href}"[^>]*>{text}</a>', top), (href, top)
    assert "credits" not in top
    assert "Log out" not in top
    assert "/accounts/profile/" not in top


def test_logged_in_header_shows_the_balance_and_account_links(alice_client, alice):
    wallet_grant(
        account=wallet_for_user(user=alice), amount=3_000_000, reason="test", actor="pytest", idempotency_key="frame-1"
    )

    response = alice_client.get("/")

    top = header(response)
    assert "3,000,000</span> credits" in top
    assert "<span data-balance-usd>$1.50</span>" in top
    assert 'href="/accounts/profile/">Account</a>' in top
    assert 'href="/accounts/logout/">Log out</a>' in top
    assert "Sign up" not in top


def test_header_log_out_link_leads_to_a_confirmation_form(alice_client):
    response = alice_client.get("/accounts/logout/")

    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r'<form[^>]*method="post"[^>]*action="/accounts/logout/"', page)
    assert 'name="csrfmiddlewaretoken"' in page
    # GET alone does not sign out.
    assert "_auth_user_id" in alice_client.session

    response = alice_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in alice_client.session
    assert "Log in" in header(alice_client.get("/"))


def test_landing_page_explains_panels_and_lists_prices(client, db):
    call_command("load_catalog", verbosity=0)  # a transactional test may have flushed it

    page = client.get("/").content.decode()

    assert "Pay only for the tokens you use" in page
    assert "Credits never expire" in page
    assert '<table class="prices">' in page
    for name in ("GPT-4o mini", "GPT-4o", "Claude Sonnet", "Gemini Flash", "Mistral Small"):
        assert f'<th scope="row">{name}' in page
    # GPT-4o mini's and GPT-4o's list prices per 1M input tokens, from the catalog
    assert "$0.15" in page and "$2.50" in page


# Every page


@pytest.mark.parametrize("url", FRAME_PAGES)
def test_every_frame_page_answers_200_for_a_logged_in_user(alice_client, url):
    response = alice_client.get(url)

    assert response.status_code == 200, url
    page = response.content.decode()
    assert '<header class="site-header">' in page
    assert 'id="header-balance"' in page
    assert '<main id="main"' in page


@pytest.mark.parametrize("url", ANONYMOUS_PAGES)
def test_anonymous_pages_are_in_the_frame(client, db, url):
    response = client.get(url)

    assert response.status_code == 200, url
    assert '<header class="site-header">' in response.content.decode()


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


@pytest.mark.parametrize("url", FRAME_PAGES)
def test_no_inline_script_on_frame_pages(alice_client, url):
    page = alice_client.get(url).content.decode()

    assert not INLINE_SCRIPT.search(page), url
    assert not INLINE_HANDLER.search(page), url


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"])
def test_every_input_has_a_label(client, db, url):
    page = client.get(url).content.decode()

    inputs = re.findall(r"<input[^>]*>", page)
    visible = [tag for tag in inputs if 'type="hidden"' not in tag]
    assert visible
    for tag in visible:
        input_id = re.search(r'\sid="([^"]+)"', tag).group(1)
        assert f'<label for="{input_id}">' in page, tag


def assert_error_next_to(page: str, field: str) -> None:
    tag = re.search(rf'<input[^>]*name="{field}"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in tag, tag
    describedby = re.search(r'aria-describedby="([^"]+)"', tag).group(1).split()
    assert f"id_{field}_error" in describedby
    error_at = page.index(f'id="id_{field}_error"')
    # The error list follows its own input, before the next field begins.
    assert page.index(tag) < error_at
    assert "<input" not in page[page.index(tag) + len(tag) : error_at]


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"email": "not-an-email", "password1": "short", "password2": "short"}, ["email", "password1"]),
        ({"email": "e@example.com", "password1": "a long passphrase", "password2": "another one"}, ["password2"]),
    ],
)
def test_field_errors_sit_next_to_their_field(client, db, data, fields):
    response = client.post("/accounts/signup/", data)

    assert response.status_code == 200
    page = response.content.decode()
    for field in fields:
        assert_error_next_to(page, field)


# Security headers


@pytest.mark.parametrize("url", ["/", "/accounts/login/", "/pricing/"])
def test_security_headers(client, db, url):
    response = client.get(url)

    csp = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


# CSRF


@pytest.fixture
def strict_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def test_csrf_is_enforced_on_api_key_forms(strict_client, alice):
    key, _ = ApiKey.issue(user=alice, name="k")

    assert strict_client.post("/accounts/profile/keys/", {"name": "x"}).status_code == 403
    assert strict_client.post(f"/accounts/profile/keys/{key.prefix}/revoke/").status_code == 403

    assert ApiKey.objects.filter(user=alice).count() == 1
    key.refresh_from_db()
    assert key.revoked_at is None


def test_csrf_is_enforced_on_account_deletion(strict_client, alice):
    response = strict_client.post("/accounts/profile/delete/", {"confirm": "alice@example.com"})

    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.is_active


def test_csrf_is_enforced_on_logout(strict_client):
    assert strict_client.post("/accounts/logout/").status_code == 403
    assert "_auth_user_id" in strict_client.session


def test_csrf_is_enforced_on_password_and_email_forms(strict_client, alice):
    response = strict_client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": "a new long passphrase", "password2": "a new long passphrase"},
    )
    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)

    response = strict_client.post("/accounts/email/", {"action_add": "", "email": "other@example.com"})
    assert response.status_code == 403
    assert not EmailAddress.objects.filter(email="other@example.com").exists()


def test_csrf_is_enforced_on_login_and_signup(alice):
    client = Client(enforce_csrf_checks=True)

    assert client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD}).status_code == 403
    assert "_auth_user_id" not in client.session
    response = client.post(
        "/accounts/signup/", {"email": "e@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 403
    assert not get_user_model().objects.filter(email="e@example.com").exists()


def test_forms_with_the_token_pass_csrf(strict_client, alice):
    page = strict_client.get("/accounts/profile/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    response = strict_client.post("/accounts/profile/keys/", {"name": "x", "csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert ApiKey.objects.filter(user=alice).count() == 1


# Account deletion


def test_deletion_needs_the_password(alice_client, alice):
    response = alice_client.post("/accounts/profile/delete/", {"password": "not the password"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "That is not your password. Nothing was deleted." in page
    assert 'aria-describedby="password_error"' in page
    assert 'id="password_error"' in page
    alice.refresh_from_db()
    assert alice.is_active
    assert "_auth_user_id" in alice_client.session


def test_deletion_signs_out_and_the_user_cannot_log_in_again(alice_client, alice, client):
    key, secret = ApiKey.issue(user=alice, name="k")

    response = alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "_auth_user_id" not in alice_client.session
    assert "Your account has been deleted" in alice_client.get("/").content.decode()
    assert alice_client.get("/accounts/profile/").status_code == 302

    alice.refresh_from_db()
    assert not alice.is_active
    assert alice.email != "alice@example.com"
    assert not alice.has_usable_password()
    assert not EmailAddress.objects.filter(email__iexact="alice@example.com").exists()
    assert not ApiKey.objects.filter(pk=key.pk).exists()

    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session

    # The address is free for a new sign-up.
    response = client.post(
        "/accounts/signup/", {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    assert get_user_model().objects.filter(email="alice@example.com", is_active=True).exists()


def test_deletion_keeps_the_ledger(alice_client, alice):
    wallet = wallet_for_user(user=alice)
    wallet_grant(account=wallet, amount=1000, reason="test", actor="pytest", idempotency_key="frame-del")

    response = alice_client.post("/accounts/profile/delete/", {"password": PASSWORD})

    assert response.status_code == 302
    wallet.refresh_from_db()
    assert wallet.balance == 1000
    assert wallet.user_id == alice.pk
