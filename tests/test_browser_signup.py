"""A real browser signs up, confirms the email, logs out, logs back in and lands on the chat."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command

from tests.browser import launch_chromium
from tests.conftest import make_user

pytestmark = pytest.mark.browser

PASSWORD = "a long and unusual passphrase 7"


@pytest.fixture
def browser_page(live_server, transactional_db, settings) -> Iterator:
    from playwright.sync_api import sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A transactional test may have emptied the catalog before this one; the chat page lists it.
    call_command("load_catalog", verbosity=0)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 360, "height": 740})
        page.set_default_timeout(10_000)
        page.console_problems = []
        page.on(
            "console",
            lambda msg: page.console_problems.append(msg.text) if msg.type in ("error", "warning") else None,
        )
        try:
            yield page
        finally:
            browser.close()
    # This test's writes are committed, the rate-limit counters in the cache table too:
    # leave none behind for the tests that count logins from 127.0.0.1.
    cache.clear()


def header_text(page) -> str:
    return page.locator("header.site-header").inner_text()


def test_signup_confirm_logout_login(browser_page, live_server):
    page = browser_page
    page.goto(live_server.url + "/")
    page.locator("header").get_by_role("link", name="Sign up").click()
    page.wait_for_url("**/accounts/signup/")

    # Fields are found by their labels, as a screen reader would.
    page.get_by_label("Email").fill("dana@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    # Keyboard focus is visible.
    page.get_by_label("Email").focus()
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineWidth")
    assert outline == "3px"
    page.get_by_role("button", name="Sign up").click()

    page.wait_for_url("**/accounts/confirm-email/")
    assert "Verify Your Email Address" in page.content()
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+", mail.outbox[0].body).group(0)
    assert link.startswith(live_server.url)

    page.goto(link)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/chat/")
    assert "credits" in header_text(page)

    page.locator("header").get_by_role("link", name="Log out").click()
    page.wait_for_url("**/accounts/logout/")
    page.locator("main").get_by_role("button", name="Log out").click()
    page.wait_for_url(live_server.url + "/")
    assert "Log in" in header_text(page)
    assert "credits" not in header_text(page)

    page.locator("header").get_by_role("link", name="Log in").click()
    page.get_by_label("Email").fill("dana@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.locator("main").get_by_role("button", name="Log in").click()

    page.wait_for_url("**/chat/")
    top = header_text(page)
    assert re.search(r"\b0 credits\b", top), top
    assert "Account" in top
    assert "Log out" in top
    page.locator("header").get_by_role("link", name="Account").click()
    page.wait_for_url("**/accounts/profile/")
    assert "dana@example.com" in page.locator("main").inner_text()

    csp = [text for text in page.console_problems if "Content Security Policy" in text]
    assert not csp, csp


@pytest.fixture
def erin(transactional_db):
    # Made before the browser starts: Playwright's sync API runs an event loop in this
    # thread, and Django refuses ORM calls from there.
    return make_user("erin@example.com")


def test_wrong_password_error_is_announced(erin, browser_page, live_server):
    page = browser_page
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill("erin@example.com")
    page.get_by_label("Password").fill("not the password")
    page.locator("main").get_by_role("button", name="Log in").click()

    alert = page.get_by_role("alert")
    assert "not correct" in alert.inner_text()
    assert page.url.endswith("/accounts/login/")
