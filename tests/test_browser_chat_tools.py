"""The chat page's tools in a real browser (chromium, live server, Celery worker, demo model):
copy buttons, links in replies, a refused first message, focus and the skip link, the
image button under Auto.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from chat.models import Conversation, Message
from tests.conftest import make_user
from tests.e2e_servers import celery_worker, chat_catalog, demo_server  # noqa: F401
from tests.test_browser_chat import (  # noqa: F401
    EMAIL,
    PASSWORD,
    browser,
    last_reply,
    log_in,
    open_page,
    orm,
    send_with_enter,
    settled,
)
from tests.wallet_helpers import funded_wallet

pytestmark = pytest.mark.browser


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def wait_for_status(page, text: str) -> None:
    """Wait until the status line says `text`: it is cleared, then set 50 ms later, and a
    loaded machine's browser can run that timer much later."""
    try:
        page.wait_for_function("t => document.getElementById('chat-status').textContent === t", arg=text)
    except PlaywrightTimeoutError:
        shown = page.locator("#chat-status").text_content()
        raise AssertionError(f"the status line says {shown!r}, not {text!r}") from None


def test_a_refused_first_message_leaves_no_conversation_behind(browser, live_server) -> None:  # noqa: F811
    orm(lambda: make_user(EMAIL, password=PASSWORD))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    # The message box has the focus on arrival.
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'composer-input'")
    page.get_by_label("Model").select_option("demo")

    # 400: too long for the demo model's context (refused before any money is looked at).
    send_with_enter(page, "word " * 20_000)
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "too long" in alert.inner_text()
    wait_for_status(page, "Your message was not sent.")
    page.wait_for_url(live_server.url + "/chat/")
    assert orm(lambda: Conversation.objects.count()) == 0
    assert page.locator("#conversation-list").inner_text().strip() == "No conversations yet."

    # 402: the empty wallet.
    send_with_enter(page, "Tell me a story")
    alert.get_by_role("link", name="Top up your wallet").wait_for()
    wait_for_status(page, "Your message was not sent.")
    assert orm(lambda: Conversation.objects.count()) == 0
    assert orm(lambda: Message.objects.count()) == 0
    assert page.url == live_server.url + "/chat/"
    assert page.locator("#chat-title").inner_text() == "New chat"
    assert "Tell me a story" not in page.locator("#chat-sidebar").inner_text()
    assert page.get_by_label("Message").input_value() == "Tell me a story"
    assert focused_id(page) == "composer-input"
    # Refusals are expected answers; the browser logs them as failed resource loads.
    assert all("400" in p or "402" in p for p in page.problems), page.problems

    # After a top-up the same draft goes through, into one new conversation.
    orm(lambda: funded_wallet(get_user_model().objects.get(email=EMAIL), 1_000_000))
    page.get_by_role("button", name="Send").click()
    settled(last_reply(page))
    assert orm(lambda: list(Conversation.objects.values_list("title", flat=True))) == ["Tell me a story"]


def test_copy_buttons_and_links_that_open_in_a_new_tab(browser, live_server) -> None:  # noqa: F811
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    text = "[demo:echo] See [the docs](https://example.com/docs).\n\n```python\nprint('copied')\n```\n"
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")
    reply = last_reply(page)
    settled(reply)

    link = reply.locator(".msg-body a", has_text="the docs")
    assert link.get_attribute("target") == "_blank"
    assert set(link.get_attribute("rel").split()) >= {"noopener", "noreferrer"}

    reply.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()") == "print('copied')\n"
    wait_for_status(page, "Copied.")
    reply.get_by_role("button", name="Copy the reply").click()
    content = orm(lambda: Message.objects.get(role="assistant").content)
    assert "```python" in content  # the Markdown as written, not the rendered text
    assert page.evaluate("navigator.clipboard.readText()") == content
    page.locator("article.msg-user").get_by_role("button", name="Copy what you wrote").click()
    assert page.evaluate("navigator.clipboard.readText()") == text.strip()

    # The same buttons on the server-rendered history after a reload.
    page.reload()
    reply = last_reply(page)
    assert reply.locator(".msg-body a").get_attribute("target") == "_blank"
    page.evaluate("navigator.clipboard.writeText('')")
    reply.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()") == "print('copied')\n"
    reply.get_by_role("button", name="Copy the reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == content
    assert not page.problems, page.problems


def test_focus_after_stop_and_the_skip_link_reaches_the_composer(browser, live_server) -> None:  # noqa: F811
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    send_with_enter(page, "Go on [demo:tokens=300] [demo:tps=20]")
    reply = last_reply(page)
    page.wait_for_function(
        "() => { const b = document.querySelector('article.msg-assistant .msg-body');"
        " return b && b.textContent.split(' ').length > 3; }"
    )
    page.get_by_role("button", name="Stop").click()
    reply.locator(".msg-meta .meta-stopped").wait_for()
    assert focused_id(page) == "composer-input"

    # The page's first link is the skip link, and it leads to the box, past the sidebar.
    page.reload()
    skip = page.get_by_role("link", name="Skip to the message box")
    assert skip.evaluate("el => el === document.querySelector('a[href], button')")
    skip.focus()
    assert focused_id(page) != "composer-input"
    page.keyboard.press("Enter")
    assert focused_id(page) == "composer-input"
    assert not page.problems, page.problems


def test_image_button_under_auto_says_why_when_it_is_off(browser, live_server, monkeypatch, settings) -> None:  # noqa: F811
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    # With no provider key, the demo model answers both tiers, and it reads images.
    attach = page.get_by_role("button", name="Attach image")
    assert page.get_by_label("Model").input_value() == "auto"
    assert attach.is_enabled()
    assert not page.locator("#attach-help").is_visible()

    # A text-only cheap tier: off, and the page says why in words.
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test")
    settings.AUTO_CHEAP_MODEL = "mistral-small"
    page.reload()
    assert attach.is_disabled()
    help_text = page.locator("#attach-help")
    assert help_text.is_visible()
    assert help_text.inner_text() == (
        "Auto can't take images: Mistral Small (cheap and flagship tiers) does not read images. "
        "Pick a model that reads images to attach one."
    )
    assert attach.get_attribute("aria-describedby") == "attach-help"
    page.get_by_label("Model").select_option("demo")
    assert attach.is_enabled() and not help_text.is_visible()
    assert not page.problems, page.problems


def test_regenerate_retry_a_cut_reply_and_edit_a_message(browser, live_server) -> None:  # noqa: F811
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")

    # A reply the provider cut off: kept, charged for what came, and offered a Retry.
    send_with_enter(page, "[demo:fail=cut] [demo:cut_after=4] [demo:tokens=30] Tell me more")
    cut = last_reply(page)
    settled(cut)
    cut_id = int(cut.get_attribute("data-message-id"))
    assert "cut off" in cut.locator(".msg-meta").inner_text()
    retry = cut.get_by_role("button", name="Retry the cut-off reply")
    assert retry.inner_text() == "Retry"
    retry.click()
    page.wait_for_function(
        "id => { const a = [...document.querySelectorAll('article.msg-assistant')];"
        " return a.length === 1 && a[0].dataset.messageId != id && a[0].querySelector('.meta-cost'); }",
        arg=str(cut_id),
    )
    retried_id = int(last_reply(page).get_attribute("data-message-id"))
    assert orm(lambda: Message.objects.get(pk=retried_id).retry_of_id) == cut_id
    assert orm(lambda: Message.objects.get(pk=cut_id).superseded_at) is not None

    # Any reply can be regenerated.
    send_with_enter(page, "[demo:tokens=6] Another one")
    page.wait_for_function("() => document.querySelectorAll('article.msg-assistant .meta-cost').length === 2")
    second = last_reply(page)
    second_id = int(second.get_attribute("data-message-id"))
    second.get_by_role("button", name="Regenerate the reply").click()
    page.wait_for_function(
        "id => { const a = [...document.querySelectorAll('article.msg-assistant')];"
        " return a.length === 2 && a[1].dataset.messageId != id && a[1].querySelector('.meta-cost'); }",
        arg=str(second_id),
    )
    assert page.locator("article.msg-user").count() == 2

    # Editing the first message replaces it and everything after it.
    first_user = page.locator("article.msg-user").first
    first_user.get_by_role("button", name="Edit what you wrote").click()
    field = page.get_by_label("Edit your message")
    assert field.evaluate("el => el === document.activeElement")
    assert field.input_value().endswith("Tell me more")
    field.fill("[demo:echo] A better question")
    first_user.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => { const a = document.querySelectorAll('article.msg-assistant');"
        " return document.querySelectorAll('article.msg').length === 2 && a.length === 1"
        " && a[0].querySelector('.meta-cost'); }"
    )
    assert page.locator("article.msg-user .msg-body").inner_text() == "[demo:echo] A better question"
    assert last_reply(page).locator(".msg-body").inner_text().strip() == "A better question"
    # The same after a reload: the replaced messages stay out of the conversation, but what
    # the replaced replies cost stays charged.
    page.reload()
    assert page.locator("article.msg").count() == 2
    charged = orm(lambda: list(Message.objects.filter(role="assistant", cost__gt=0).values_list("pk", flat=True)))
    assert len(charged) == 5
    assert not page.problems, page.problems


def test_settings_cost_export_search_and_the_generating_marker(browser, live_server) -> None:  # noqa: F811
    user = orm(lambda: make_user(EMAIL, password=PASSWORD))
    orm(lambda: funded_wallet(user, 2_000_000))
    orm(lambda: Conversation.objects.create(user=user, title="Trip to Lisbon"))
    page = open_page(browser, width=360, height=740)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    # Settings chosen before the first message go with the conversation it makes.
    page.get_by_text("Settings", exact=True).click()
    page.get_by_label("System prompt").fill("Answer like a pirate.")
    page.get_by_label("Temperature").fill("0.4")
    page.get_by_role("button", name="Save settings").click()
    send_with_enter(page, "[demo:tokens=40] [demo:tps=40] Ahoy")
    reply = last_reply(page)
    # While it is written, its conversation is marked in the sidebar.
    item = page.locator('#conversation-list li[data-running="true"]')
    item.wait_for(state="attached")
    settled(reply)
    page.wait_for_function("() => !document.querySelector('#conversation-list li[data-running]')")
    conversation = orm(lambda: Conversation.objects.exclude(title="Trip to Lisbon").get())
    assert conversation.system_prompt == "Answer like a pirate." and str(conversation.temperature) == "0.40"
    cost = orm(lambda: Message.objects.get(role="assistant").cost)
    assert page.locator("#conversation-cost").inner_text().startswith(f"Cost so far: {cost:,} credits ($0.0000")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # Changed later with the PATCH, and the page shows what was saved after a reload.
    page.get_by_label("Temperature").fill("1.5")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Saved: the next replies use these settings.").wait_for()
    assert orm(lambda: str(Conversation.objects.get(pk=conversation.pk).temperature)) == "1.50"
    page.reload()
    assert page.locator("#conversation-cost").inner_text().startswith(f"Cost so far: {cost:,} credits")
    page.get_by_text("Settings", exact=True).click()
    assert page.get_by_label("Temperature").input_value() == "1.50"

    with page.expect_download() as download:
        page.get_by_role("link", name="Markdown").click()
    assert download.value.suggested_filename == f"panels-{conversation.pk}-demo-tokens-40-demo-tps-40-ahoy.md"
    assert "## You" in open(download.value.path()).read()

    # Search: by title, and by text.
    page.set_viewport_size({"width": 1280, "height": 800})
    search = page.get_by_label("Search conversations")
    search.fill("lisbon")
    page.get_by_text("1 conversation matches “lisbon”.").wait_for()
    assert page.locator("#conversation-list .conversation-link").all_inner_texts() == ["Trip to Lisbon"]
    search.fill("ahoy")
    page.get_by_text("1 conversation matches “ahoy”.").wait_for()
    assert "Ahoy" in page.locator("#conversation-list .search-snippet").inner_text()
    search.press("Escape")
    page.wait_for_function("() => document.querySelectorAll('#conversation-list li').length === 2")
    assert not page.problems, page.problems


def test_after_a_top_up_from_not_enough_credits_the_conversation_and_draft_are_back(browser, live_server) -> None:  # noqa: F811
    user = orm(lambda: make_user(EMAIL, password=PASSWORD))
    conversation = orm(lambda: Conversation.objects.create(user=user, title="Captions"))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(f"{live_server.url}/chat/c/{conversation.pk}/")
    page.get_by_label("Model").select_option("demo")
    send_with_enter(page, "Three captions for a bakery")
    page.get_by_role("alert").get_by_role("link", name="Top up your wallet").click()
    page.wait_for_url("**/wallet/topup/")
    page.get_by_role("button", name=re.compile(r"^Buy \$1\.00 for")).click()
    page.wait_for_url("**/wallet/topup/*/pay/")
    page.get_by_role("button", name="Pay $1.00 (demo)").click()
    page.wait_for_url("**/wallet/topup/*/done/")
    page.get_by_role("link", name="Start chatting").click()
    # Back in the conversation the message was for, with the draft in the box.
    page.wait_for_url(f"{live_server.url}/chat/c/{conversation.pk}/")
    box = page.get_by_label("Message")
    page.wait_for_function("() => document.getElementById('composer-input').value === 'Three captions for a bakery'")
    box.press("Enter")
    settled(last_reply(page))
    # Only once: a later visit to a new chat stays there.
    page.goto(live_server.url + "/chat/")
    assert page.url == live_server.url + "/chat/"
    assert all("402" in p for p in page.problems), page.problems
