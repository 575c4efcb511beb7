"""A real browser logs in, tops up $5 through the demo checkout and sees the new balance."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache
from django.db import connection

from tests.browser import launch_chromium
from tests.conftest import make_user
from wallet.models import Account, Topup

pytestmark = pytest.mark.browser

PASSWORD = "a long and unusual passphrase 7"


@pytest.fixture
def browser_page(live_server, transactional_db, settings) -> Iterator:
    from playwright.sync_api import sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STRIPE_SECRET_KEY = ""  # the demo checkout
    cache.clear()
    # Made before the browser starts: Playwright's event loop forbids ORM calls in this thread.
    make_user("erin@example.com", password=PASSWORD)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
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
    cache.clear()


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def test_topup_five_dollars_through_the_demo_checkout(browser_page, live_server) -> None:
    page = browser_page
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill("erin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)

    page.locator("header").get_by_role("link", name="Top up").click()
    page.wait_for_url("**/wallet/topup/")
    assert "10,000,000 credits" in page.locator("#pack-5").inner_text()
    page.get_by_role("button", name="Buy $5.00 for 10,000,000 credits").click()

    page.wait_for_url("**/wallet/topup/*/pay/")
    assert "demo — no card is charged" in page.locator("h1").inner_text()
    page.get_by_role("button", name="Pay $5.00 (demo)").click()

    page.wait_for_url("**/wallet/topup/*/done/")
    assert "10,000,000 credits were added" in page.locator("#topup-result").inner_text()

    page.get_by_role("link", name="See the wallet").click()
    page.wait_for_url("**/wallet/#topup-*")
    assert page.locator("#wallet-balance").inner_text() == "10,000,000"
    assert digits(page.locator("#header-balance [data-balance-credits]").inner_text()) == "10000000"
    row = page.locator("tr[id^='topup-']")
    assert "$5.00" in row.inner_text() and "Paid" in row.inner_text()
    assert page.console_problems == []

    # Playwright's event loop is running in this thread, so the ORM is asked from another.
    with ThreadPoolExecutor(1) as pool:
        topup, balance = pool.submit(stored_state).result()
    assert (topup.status, topup.provider) == (Topup.Status.PAID, Topup.Provider.DEMO)
    assert balance == 10_000_000


def stored_state() -> tuple[Topup, int]:
    try:
        topup = Topup.objects.get()
        return topup, Account.objects.get(user_id=topup.user_id).balance
    finally:
        connection.close()
