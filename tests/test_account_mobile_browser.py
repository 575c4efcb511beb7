"""The account page on a 360 px phone: no sideways scroll with API keys listed, the Usage
link still in the menu; a new key is shown once with a Copy button; revoking asks first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from tests.browser import launch_chromium
from tests.conftest import make_user

pytestmark = pytest.mark.browser

PASSWORD = "a long and unusual passphrase 7"


@pytest.fixture
def phone(live_server, transactional_db, settings) -> Iterator:
    from playwright.sync_api import sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    make_user("fay.with.a.rather.long.address@example.com", password=PASSWORD)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 360, "height": 740})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        page = context.new_page()
        page.set_default_timeout(10_000)
        try:
            yield page
        finally:
            browser.close()
    cache.clear()


def test_account_page_at_360px_with_keys(phone, live_server) -> None:
    page = phone
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill("fay.with.a.rather.long.address@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    assert "Successfully signed in as fay.with.a.rather.long.address@example.com" in page.content()

    page.goto(live_server.url + "/accounts/profile/")
    for name in ("laptop script with a long name", "ci"):
        page.get_by_label("Name").fill(name)
        page.get_by_role("button", name="Create key").click()
        page.wait_for_url(live_server.url + "/accounts/profile/")
    key = page.locator("#new-api-key").input_value()
    assert key.startswith("pnl_")
    page.get_by_role("button", name="Copy").click()
    page.wait_for_function("document.querySelector('[data-copy-status]').textContent.length > 0")
    assert page.evaluate("navigator.clipboard.readText()") == key

    # No sideways scroll for the page; the Usage link is visible in the menu.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, width
    usage = page.locator("header nav").get_by_role("link", name="Usage")
    assert usage.is_visible()
    box = usage.bounding_box()
    assert box and box["x"] + box["width"] <= 360

    # A reload makes no second key and no longer shows the secret.
    page.reload()
    assert page.locator("#new-api-key").count() == 0
    assert page.locator("table.api-keys tbody tr").count() == 2

    # Revoke asks first; "Keep it" keeps it.
    page.locator("table.api-keys").get_by_role("link", name="Revoke…").first.click()
    assert page.get_by_role("heading", name="Revoke API key?").is_visible()
    page.get_by_role("link", name="Keep it").click()
    assert page.locator("table.api-keys").get_by_text("revoked").count() == 0
    page.locator("table.api-keys").get_by_role("link", name="Revoke…").first.click()
    page.get_by_role("button", name="Revoke this key").click()
    page.wait_for_url(live_server.url + "/accounts/profile/")
    assert "revoked: it no longer works" in page.content()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
