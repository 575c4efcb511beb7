""" "Ask the flagship" in a real browser: Debian's chromium against the live server, a real Celery
worker subprocess, the demo model server over HTTP and the real Redis.

Both tiers' models point at the demo server with a key set (it accepts any model name), so
Auto's choice is really answered: a cheap-tier reply streams in, the person presses "Ask the
flagship", a second answer from the flagship model streams in below it with its own charge,
and the usage page counts the escalation under the kind of task Auto took the message for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.db.models import Sum

from chat.models import Message, ModelSpec
from tests.browser import launch_chromium
from tests.conftest import make_user
from tests.conftest import test_database_url as database_url_of_tests
from tests.e2e_servers import chat_catalog, demo_server, start_worker, stop_worker, tasks_routed_to  # noqa: F401
from tests.test_browser_chat import EMAIL, PASSWORD, last_reply, log_in, open_page, orm, send_with_enter, settled
from tests.wallet_helpers import funded_wallet
from wallet.models import Entry

pytestmark = pytest.mark.browser

KEY = "sk-demo-server"  # the demo server takes any key; nothing leaves the machine


@pytest.fixture(scope="module")
def openai_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator:
    """A worker that has OPENAI_API_KEY, so the OpenAI-tier models count as available there too."""
    with django_db_blocker.unblock():
        database_url = database_url_of_tests()
    worker = start_worker(
        database_url=database_url, log_dir=tmp_path_factory.mktemp("worker"), env={"OPENAI_API_KEY": KEY}
    )
    try:
        with tasks_routed_to(worker.queue):
            yield worker
    finally:
        stop_worker(worker)


@pytest.fixture
def browser(live_server, transactional_db, chat_catalog, openai_worker, demo_server, settings, monkeypatch) -> Iterator:  # noqa: F811
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for name in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    ModelSpec.objects.filter(slug__in=["gpt-4o-mini", "gpt-4o"]).update(
        base_url=f"http://127.0.0.1:{demo_server.port}/v1"
    )
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()
    cache.clear()


def test_ask_the_flagship_streams_a_second_answer_and_the_usage_page_counts_it(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 20_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    assert page.get_by_label("Model").input_value() == "auto"

    send_with_enter(page, "Translate 'the museum opens at ten' into Spanish. [demo:tokens=12]")
    # Pinned by id: "the last reply" will be the second answer once it arrives.
    first = page.locator("#message-" + last_reply(page).get_attribute("data-message-id"))
    settled(first)
    assert first.get_attribute("data-status") == "done"
    assert re.match(
        r"Auto → GPT-4o mini: translation \(flagship likelihood \d+%\)", first.locator(".meta-route").inner_text()
    )
    button = first.get_by_role("button", name="Ask the flagship")
    assert button.is_visible()

    button.click()
    second = page.locator("article.msg-assistant[data-escalation-of]")
    second.wait_for()
    assert second.get_attribute("data-escalation-of") == first.get_attribute("data-message-id")
    settled(second)
    assert second.get_attribute("data-status") == "done"
    assert (
        second.locator(".meta-route").inner_text() == "Ask the flagship → GPT-4o (Auto had answered with GPT-4o mini)"
    )
    assert page.locator("article.msg-assistant").count() == 2
    assert first.get_by_role("button", name="Ask the flagship").count() == 0  # asked once

    first_id = int(first.get_attribute("data-message-id"))
    second_id = int(second.get_attribute("data-message-id"))
    replies = orm(
        lambda: {m.pk: m for m in Message.objects.select_related("model").filter(pk__in=[first_id, second_id])}
    )
    assert replies[second_id].escalation_of_id == first_id
    assert replies[second_id].model.slug == "gpt-4o" and replies[first_id].model.slug == "gpt-4o-mini"
    assert replies[second_id].route_category == "translation"
    # Each answer was paid by its own hold: two usage entries, the flagship's the dearer.
    usage = orm(
        lambda: dict(Entry.objects.filter(kind=Entry.Kind.USAGE).values_list("reference").annotate(Sum("amount")))
    )
    assert set(usage) == {f"message:{first_id}", f"message:{second_id}"}
    assert usage[f"message:{second_id}"] > usage[f"message:{first_id}"] > 0

    # A reload shows both answers, and the button stays gone.
    page.reload()
    assert page.locator("article.msg-assistant").count() == 2
    assert page.get_by_role("button", name="Ask the flagship").count() == 0

    page.goto(live_server.url + "/usage/")
    escalations = page.locator("#auto-escalations")
    assert "You pressed Ask the flagship on 1 Auto reply" in escalations.inner_text()
    assert escalations.locator('li[data-category="translation"]').inner_text() == "translation: 1"
    assert not page.problems, page.problems
