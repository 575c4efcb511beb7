"""Automatic top-up in a real browser, offline (the demo card): Debian's chromium against the
live server, a real Celery worker subprocess and the demo model server.

A person saves the demo card, sets a threshold and an amount, chats below the threshold,
and sees the automatic top-up credited; with the demo declining card they see it paused
with the reason and a way to resume. The section fits a 360 px screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.cache import cache

from tests.browser import launch_chromium
from tests.conftest import make_user
from tests.conftest import test_database_url as database_url_for_tests
from tests.e2e_servers import chat_catalog, demo_server, start_worker, stop_worker, tasks_routed_to  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, AutoTopup, Topup

pytestmark = pytest.mark.browser

PASSWORD = "a long and unusual passphrase 7"
DOLLAR = 2_000_000


def orm(fn: Callable[[], Any]) -> Any:
    """Database work from the test body: Playwright's event loop forbids ORM calls in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator:
    """A worker whose follow-up tasks (the automatic top-up a settled reply queues) come back to it."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    queue = "test-autotopup"
    started = start_worker(
        database_url=database_url,
        log_dir=tmp_path_factory.mktemp("worker"),
        queue=queue,
        env={"CELERY_TASK_DEFAULT_QUEUE": queue, "STRIPE_SECRET_KEY": ""},
    )
    try:
        with tasks_routed_to(queue):
            yield started
    finally:
        stop_worker(started)


@pytest.fixture
def browser(live_server, transactional_db, chat_catalog, worker, settings) -> Iterator:  # noqa: F811
    from playwright.sync_api import sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STRIPE_SECRET_KEY = ""  # the demo card
    cache.clear()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()
    cache.clear()


def open_page(browser, *, width: int = 1280):
    page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
    page.set_default_timeout(15_000)
    page.problems = []
    page.on("pageerror", lambda err: page.problems.append(f"page error: {err}"))
    page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
    return page


def log_in(page, live_server, email: str) -> None:
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def set_up(page, live_server, *, declining: bool) -> None:
    page.goto(live_server.url + "/wallet/")
    section = page.locator("#auto-topup")
    assert "Off." in section.locator("#autotopup-status").inner_text()
    assert section.get_by_label("Turn automatic top-up on").is_disabled()  # no card yet
    name = "Save a demo declining card" if declining else "Save the demo card"
    section.get_by_role("button", name=name).click()
    page.wait_for_url("**/wallet/#auto-topup")
    saved = "Saved the demo declining card" if declining else "Saved the demo card"
    assert saved in page.locator("body").inner_text()
    card = section.locator("#autotopup-card").inner_text()
    assert card.startswith("Demo declining card" if declining else "Demo card")
    assert "demo — no card is charged" in card
    section.get_by_label("When my available balance falls below (USD)").fill("1.00")
    section.get_by_label("Top up by (USD, $1 to $1,000)").fill("5")
    section.get_by_label("Turn automatic top-up on").check()
    section.get_by_role("button", name="Save").click()
    page.wait_for_url("**/wallet/#auto-topup")
    status = section.locator("#autotopup-status").inner_text()
    assert "On." in status and "below $1.00" in status and "$5.00" in status


def chat_once(page, live_server) -> None:
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    box = page.get_by_label("Message")
    box.fill("A short answer please [demo:tokens=8]")
    box.press("Enter")
    reply = page.locator("article.msg-assistant").last
    reply.locator(".msg-meta .meta-cost").wait_for()
    assert reply.get_attribute("data-status") == "done"


def wallet_until(page, live_server, selector: str, timeout: float = 60.0) -> str:
    """Reload the wallet page until `selector` shows (the worker charges in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(live_server.url + "/wallet/")
        if page.locator(selector).count():
            return page.locator(selector).first.inner_text()
        page.wait_for_timeout(300)
    raise AssertionError(f"{selector} did not appear on the wallet page")


def test_demo_card_tops_up_after_a_reply_takes_the_balance_below(browser, live_server) -> None:
    email = "dana@example.com"
    orm(lambda: funded_wallet(make_user(email, password=PASSWORD), DOLLAR))
    page = open_page(browser)
    log_in(page, live_server, email)

    set_up(page, live_server, declining=False)
    assert orm(lambda: not Topup.objects.filter(kind=Topup.Kind.AUTO).exists())  # $1.00 is not below $1.00
    chat_once(page, live_server)

    row = wallet_until(page, live_server, "tr.topup-paid:has(.badge-auto)")
    assert "$5.00" in row and "10,000,000" in row
    assert ", paid," in page.locator("#autotopup-last").inner_text()
    account = orm(lambda: Account.objects.get(user__email=email))
    assert DOLLAR + 5 * DOLLAR - 10_000 < account.balance < DOLLAR + 5 * DOLLAR
    assert page.problems == []


def test_the_declining_demo_card_pauses_it_with_a_way_to_resume(browser, live_server) -> None:
    email = "eli@example.com"
    orm(lambda: funded_wallet(make_user(email, password=PASSWORD), DOLLAR))
    page = open_page(browser, width=360)
    log_in(page, live_server, email)

    set_up(page, live_server, declining=True)
    chat_once(page, live_server)

    notice = wallet_until(page, live_server, "#autotopup-paused")
    assert "Automatic top-up is paused." in notice and "declined" in notice
    assert page.locator("#autotopup-paused").get_attribute("role") == "alert"
    assert page.get_by_role("button", name="Resume automatic top-up").is_visible()
    assert ", failed," in page.locator("#autotopup-last").inner_text()
    assert orm(lambda: AutoTopup.objects.get(account__user__email=email).paused)
    assert orm(lambda: Account.objects.get(user__email=email).balance) < DOLLAR  # nothing credited
    # At 360 px the section fits: nothing makes the page scroll sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # A working card lifts the pause.
    page.locator("#auto-topup").get_by_role("button", name="Use the demo card").click()
    page.wait_for_url("**/wallet/#auto-topup")
    assert not page.locator("#autotopup-paused").count()
    assert page.problems == []
