"""The chat page in a real browser: Debian's chromium against the live server, a real Celery
worker subprocess, the demo model server over HTTP and the real Redis.

A person logs in, tops up through the demo checkout, picks the demo model, sends with Enter,
watches the reply stream in, sees its cost and the lower balance, and finds the reply's line
on the wallet page linking back to it. Model output that contains markup stays inert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.cache import cache

from chat.models import Message
from tests.browser import launch_chromium
from tests.conftest import make_user
from tests.e2e_servers import celery_worker, chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry

pytestmark = pytest.mark.browser

PASSWORD = "a long and unusual passphrase 7"
EMAIL = "casey@example.com"
RUNNING = ("queued", "streaming")


def orm(fn: Callable[[], Any]) -> Any:
    """Database reads from the test body: Playwright's event loop forbids ORM calls in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def digits(text: str) -> int:
    return int("".join(c for c in text if c.isdigit()))


@pytest.fixture
def browser(live_server, transactional_db, chat_catalog, celery_worker, settings) -> Iterator:  # noqa: F811
    from playwright.sync_api import sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STRIPE_SECRET_KEY = ""  # the demo checkout
    cache.clear()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()
    cache.clear()


def open_page(browser, *, width: int = 1280, height: int = 800):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    # Generous: on a loaded 2-core machine a page, a Celery pick-up or a chromium step can
    # take many seconds. What never comes still fails, only later.
    page.set_default_timeout(30_000)
    page.problems = []
    page.dialogs = []
    page.on("pageerror", lambda err: page.problems.append(f"page error: {err}"))
    page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)

    def on_dialog(dialog) -> None:
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return page


# Records every text a streaming reply shows, as it changes (installed before the page's
# own script runs, and again after a reload).
RECORD_STREAM = """
window.__streamTexts = [];
document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("chat-log");
  if (!log) return;
  new MutationObserver(() => {
    for (const body of document.querySelectorAll("article.msg-assistant.streaming .msg-body")) {
      const texts = window.__streamTexts;
      if (body.querySelector(".typing")) continue;
      if (texts[texts.length - 1] !== body.textContent) texts.push(body.textContent);
    }
  }).observe(log, { subtree: true, childList: true, characterData: true });
});
"""


def streamed_texts(page) -> list[str]:
    return [t for t in page.evaluate("window.__streamTexts") if t]


def assert_streamed_exactly(texts: list[str], content: str) -> None:
    """Each text shown was a prefix of the reply (nothing repeated), and all of it arrived."""
    assert texts, "nothing was streamed"
    for text in texts:
        assert content.startswith(text), (text, content)
    assert texts[-1] == content


def log_in(page, live_server, email: str = EMAIL) -> None:
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def send_with_enter(page, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def last_reply(page):
    return page.locator("article.msg-assistant").last


def settled(reply) -> None:
    reply.locator(".msg-meta .meta-cost").wait_for(timeout=60_000)


def reply_running_with_stop_shown(page, reply) -> bool:
    """Whether the reply is still running and the Stop button shows, read in one step in the
    page (two round trips could see the reply end between them)."""
    return reply.evaluate(
        "(a) => ['queued', 'streaming'].includes(a.dataset.status) && !document.getElementById('stop-button').hidden"
    )


def test_log_in_top_up_chat_and_find_the_reply_on_the_wallet_page(browser, live_server) -> None:
    orm(lambda: make_user(EMAIL, password=PASSWORD))
    page = open_page(browser)
    page.add_init_script(RECORD_STREAM)
    log_in(page, live_server)

    # Top up $1 through the demo checkout.
    page.goto(live_server.url + "/wallet/topup/")
    page.get_by_role("button", name=re.compile(r"^Buy \$1\.00 for")).click()
    page.wait_for_url("**/wallet/topup/*/pay/")
    page.get_by_role("button", name="Pay $1.00 (demo)").click()
    page.wait_for_url("**/wallet/topup/*/done/")

    page.goto(live_server.url + "/chat/")
    header_credits = page.locator("#header-balance [data-balance-credits]")
    assert digits(header_credits.inner_text()) == 2_000_000
    select = page.get_by_label("Model")
    assert select.input_value() == "auto"  # the default for a new conversation
    assert page.locator("#model-select option").first.inner_text().startswith("Auto")
    demo_label = page.locator('#model-select option[value="demo"]').inner_text()
    assert "Demo model (demo)" in demo_label and "$0.15 in / $0.60 out per 1M tokens" in demo_label
    select.select_option("demo")

    # The first token comes after 2 s, so the reply is surely still running when the Stop
    # button is looked at, however slowly this machine answers.
    send_with_enter(page, "Write me a short poem [demo:tokens=40] [demo:tps=40] [demo:ttft=2000]")
    reply = last_reply(page)
    reply.wait_for()
    assert page.get_by_label("Message").input_value() == ""  # accepted, so the draft is cleared
    assert reply_running_with_stop_shown(page, reply)
    settled(reply)
    # It streamed: the page showed the text grow over several steps, each a continuation of
    # the last (recorded in the page as it changed, not sampled from here).
    texts = [t for t in streamed_texts(page) if "Waiting for the model" not in t]
    assert len(texts) >= 4, texts
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False)), texts
    assert reply.get_attribute("data-status") == "done"
    assert not page.locator("#stop-button").is_visible()

    message_id = int(reply.get_attribute("data-message-id"))
    message = orm(lambda: Message.objects.select_related("conversation").get(pk=message_id))
    assert message.status == Message.Status.DONE and message.output_tokens == 40
    assert message.cost > 0
    # The streamed plain text was replaced by the server's HTML of the same Markdown: the demo
    # reply ends in a fenced code block, now a <pre><code> without its fences.
    assert "```python" in message.content
    assert reply.locator(".msg-body pre code.language-python").inner_text().strip() == 'print("demo")'
    # The reply's text as shown, less the page's own buttons (Copy code).
    shown = reply.locator(".msg-body").evaluate(
        "b => { const c = b.cloneNode(true); c.querySelectorAll('button').forEach(x => x.remove());"
        " document.body.append(c); const t = c.innerText; c.remove(); return t; }"
    )
    shown = " ".join(shown.split())
    assert shown == " ".join(message.content.replace("```python", "").replace("```", "").split())
    meta = reply.locator(".msg-meta").inner_text()
    assert "Demo model" in meta
    assert f"{message.input_tokens} in / 40 out tokens" in meta
    assert f"{message.cost} credits ($0.0000" in meta
    # The header balance followed the settled reply, without a reload.
    available = orm(lambda: Account.objects.get(user__email=EMAIL).available)
    assert available == 2_000_000 - message.cost
    page.wait_for_function(
        "n => document.querySelector('#header-balance [data-balance-credits]').textContent.replace(/\\D/g, '') == n",
        arg=str(available),
    )
    # The new conversation is in the sidebar, and the address is now its own.
    assert page.url.endswith(f"/chat/c/{message.conversation_id}/")
    current = page.locator('#conversation-list a[aria-current="page"]')
    assert current.inner_text().startswith("Write me a short poem")

    page.screenshot(path="/tmp/chat-browser-1280.png")
    phone = open_page(browser, width=360, height=740)
    log_in(phone, live_server)
    phone.goto(page.url)
    phone.locator(f"#message-{message_id} .meta-cost").wait_for()
    assert not phone.locator("#chat-sidebar").is_visible()
    phone.screenshot(path="/tmp/chat-browser-360.png")
    phone.get_by_role("button", name="Conversations").click()
    phone.locator("#chat-sidebar").get_by_role("link", name=re.compile("Write me a short poem")).wait_for()
    phone.wait_for_timeout(400)  # the slide-in transition
    phone.screenshot(path="/tmp/chat-browser-360-sidebar.png")
    assert scroll_width(phone) <= 360
    assert not phone.problems, phone.problems

    # The wallet lists the reply's usage, linking back to the message in its conversation.
    page.get_by_role("link", name="Wallet", exact=True).click()
    page.wait_for_url("**/wallet/")
    entry = orm(lambda: Entry.objects.get(kind=Entry.Kind.USAGE, debit_account__user__email=EMAIL))
    assert entry.amount == message.cost
    row = page.locator(f"#entry-{entry.pk}")
    assert digits(row.locator("td.num").first.inner_text()) == message.cost
    row.locator(f'a[href="/chat/m/{message_id}/"]').click()
    page.wait_for_url(f"**/chat/c/{message.conversation_id}/#message-{message_id}")
    target = page.locator(f"#message-{message_id}")
    target.wait_for()
    assert "highlight" in (target.get_attribute("class") or "")
    assert target.is_visible()
    assert not page.problems, page.problems


def scroll_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_model_output_with_markup_is_shown_inert(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    page.add_init_script(RECORD_STREAM)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    attack = (
        "[demo:echo] [demo:tps=30] <script>window.pwned = 1; alert('script ran')</script> "
        '<img src=x onerror="window.pwned = 2; alert(2)"> [click](javascript:alert(3))'
    )
    send_with_enter(page, attack)
    reply = last_reply(page)
    settled(reply)
    texts = streamed_texts(page)
    assert any("<script>" in t for t in texts), texts  # streamed as text
    body = reply.locator(".msg-body")
    assert "<script>window.pwned = 1; alert('script ran')</script>" in body.inner_text()
    assert body.locator("script, img, iframe").count() == 0
    assert body.locator("a[href]").count() == 0  # the javascript: link lost its href
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert page.dialogs == []
    # And the same after a reload, from the server-rendered history.
    page.reload()
    last_reply(page).locator(".msg-meta .meta-cost").wait_for()
    assert last_reply(page).locator(".msg-body script, .msg-body img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.dialogs == []
    assert not page.problems, page.problems


def test_reload_mid_stream_resumes_the_reply_without_losing_or_repeating_text(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    page.add_init_script(RECORD_STREAM)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    send_with_enter(page, "A longer one [demo:tokens=120] [demo:tps=20]")  # 6 s: the reload lands mid-reply
    reply = last_reply(page)
    page.wait_for_function(
        "() => { const b = document.querySelector('article.msg-assistant .msg-body');"
        " return b && b.textContent.split(' ').length > 8; }"
    )
    message_id = int(reply.get_attribute("data-message-id"))
    page.reload()
    reply = page.locator(f"#message-{message_id}")
    assert reply.get_attribute("data-status") in RUNNING
    # The model choice is remembered for this conversation.
    assert page.get_by_label("Model").input_value() == "demo"
    settled(reply)
    content = orm(lambda: Message.objects.get(pk=message_id).content)
    assert len(content.split()) == 120
    # After the reload the stream started over from its first event: the whole reply, once.
    assert_streamed_exactly(streamed_texts(page), content)
    assert reply.get_attribute("data-status") == "done"
    assert not page.problems, page.problems


def test_stop_keeps_what_was_written_and_charges_for_it(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    send_with_enter(page, "Go on for a while [demo:tokens=300] [demo:tps=20]")
    reply = last_reply(page)
    page.wait_for_function(
        "() => { const b = document.querySelector('article.msg-assistant .msg-body');"
        " return b && b.textContent.split(' ').length > 5; }"
    )
    page.get_by_role("button", name="Stop").click()
    reply.locator(".msg-meta .meta-stopped").wait_for()
    assert reply.get_attribute("data-status") == "cancelled"
    message_id = int(reply.get_attribute("data-message-id"))
    message = orm(lambda: Message.objects.get(pk=message_id))
    assert message.status == Message.Status.CANCELLED
    assert 0 < message.output_tokens < 300
    assert f"{message.cost} credits" in reply.locator(".msg-meta").inner_text()
    assert page.locator("#send-button").is_visible()
    assert not page.problems, page.problems


def test_failed_reply_shows_the_reason_and_retry(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    send_with_enter(page, "This will fail [demo:fail=500]")
    reply = last_reply(page)
    retry = reply.get_by_role("button", name="Retry")
    retry.wait_for()
    assert reply.get_attribute("data-status") == "failed"
    assert re.search(r"This reply failed: .+\. You were not charged\.", reply.locator(".msg-error").inner_text())
    first_id = int(reply.get_attribute("data-message-id"))
    retry.click()
    # The retry answers in place of the failed reply (and fails again: same prompt).
    page.wait_for_function(
        "id => { const a = document.querySelector('article.msg-assistant:last-of-type');"
        " return a && a.dataset.messageId != id && a.dataset.status == 'failed'; }",
        arg=str(first_id),
    )
    assert page.locator("article.msg-assistant").count() == 1
    new_id = int(last_reply(page).get_attribute("data-message-id"))
    assert orm(lambda: Message.objects.get(pk=new_id).retry_of_id) == first_id
    available = orm(lambda: Account.objects.get(user__email=EMAIL).available)
    assert available == 2_000_000  # failures cost nothing
    assert not page.problems, page.problems


def test_too_few_credits_explains_and_links_to_top_up_keeping_the_draft(browser, live_server) -> None:
    orm(lambda: make_user(EMAIL, password=PASSWORD))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    box = page.get_by_label("Message")
    # Shift+Enter is a new line, not a send.
    box.fill("Hello with")
    box.press("Shift+Enter")
    box.press_sequentially("an empty wallet")
    assert box.input_value() == "Hello with\nan empty wallet"
    assert page.locator("article.msg").count() == 0
    box.press("Enter")
    alert = page.get_by_role("alert")
    alert.get_by_role("link", name="Top up your wallet").wait_for()
    assert re.search(r"Not enough credits: this message can cost up to [\d,]+ credits", alert.inner_text())
    assert "your wallet has 0 available" in alert.inner_text()
    assert alert.get_by_role("link", name="Top up your wallet").get_attribute("href") == "/wallet/topup/"
    assert box.input_value() == "Hello with\nan empty wallet"
    assert box.evaluate("el => el === document.activeElement")
    assert page.locator("article.msg").count() == 0
    assert orm(lambda: Message.objects.count()) == 0
    # 402 is an expected answer here; the browser logs it as a failed resource load.
    assert all("402" in p for p in page.problems), page.problems


def test_rename_and_delete_conversations_from_the_sidebar(browser, live_server) -> None:
    from chat.models import Conversation

    def seed() -> tuple[int, int]:
        user = make_user(EMAIL, password=PASSWORD)
        old = Conversation.objects.create(user=user, title="Old notes")
        current = Conversation.objects.create(user=user, title="Captions")
        return old.pk, current.pk

    old_id, current_id = orm(seed)
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(f"{live_server.url}/chat/c/{current_id}/")
    sidebar = page.locator("#chat-sidebar")
    # Newest first.
    assert sidebar.locator(".conversation-link").all_inner_texts() == ["Captions", "Old notes"]

    sidebar.get_by_role("button", name="Rename “Captions”").click()
    field = sidebar.get_by_label("New title")
    assert field.evaluate("el => el === document.activeElement")
    field.fill("Launch captions")
    field.press("Enter")
    page.locator("#chat-title", has_text="Launch captions").wait_for()
    assert page.title().startswith("Launch captions")
    page.wait_for_function("() => document.activeElement.classList.contains('conversation-link')")
    assert orm(lambda: Conversation.objects.get(pk=current_id).title) == "Launch captions"

    # Delete asks first; Cancel keeps it.
    sidebar.get_by_role("button", name="Delete “Old notes”").click()
    dialog = page.get_by_role("dialog")
    assert "Delete “Old notes”?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert not dialog.is_visible()
    assert orm(lambda: Conversation.objects.filter(pk=old_id).exists())

    sidebar.get_by_role("button", name="Delete “Old notes”").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    sidebar.locator(f'li[data-conversation-id="{old_id}"]').wait_for(state="detached")
    assert not orm(lambda: Conversation.objects.filter(pk=old_id).exists())

    # Deleting the open conversation goes back to a new chat.
    sidebar.get_by_role("button", name="Delete “Launch captions”").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{live_server.url}/chat/")
    assert "No conversations yet." in page.locator("#conversation-list").inner_text()
    assert not page.problems, page.problems


# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5dd1b6b0000000049454e44ae426082"
)


def test_image_attachment_only_for_models_that_read_images(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    attach = page.get_by_role("button", name="Attach image")
    # Auto: both tiers are answered by the demo model here (no provider key), which reads images.
    assert attach.is_enabled()
    page.get_by_label("Model").select_option("demo")
    assert attach.is_enabled()

    # Too big: a clear message, nothing attached.
    limit = page.evaluate("JSON.parse(document.getElementById('chat-config').textContent).max_image_bytes")
    page.locator("#attach-input").set_input_files(
        {"name": "huge.png", "mimeType": "image/png", "buffer": PNG + b"\0" * limit}
    )
    assert "images can be at most" in page.get_by_role("alert").inner_text()
    assert not page.locator("#attach-preview").is_visible()

    page.locator("#attach-input").set_input_files({"name": "dot.png", "mimeType": "image/png", "buffer": PNG})
    page.get_by_role("button", name="Remove image").wait_for()
    assert page.locator("#attach-preview img").get_attribute("src").startswith("data:image/png;base64,")
    send_with_enter(page, "What is in this picture? [demo:tokens=5]")
    reply = last_reply(page)
    settled(reply)
    assert page.locator("article.msg-user img.msg-image").count() == 1
    assert not page.locator("#attach-preview").is_visible()
    prompt = orm(lambda: Message.objects.filter(role=Message.Role.USER).get())
    assert prompt.attachments[0]["url"].startswith("data:image/png;base64,")
    # The image is part of the history after a reload.
    page.reload()
    assert page.locator("article.msg-user img.msg-image").count() == 1
    assert not page.problems, page.problems


def test_a_dropped_stream_resumes_after_the_last_event_seen(browser, live_server) -> None:
    orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    page.add_init_script(RECORD_STREAM)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    asked_after: list[str | None] = []
    kept_ids: list[str] = []

    def cut_the_first_connection(route) -> None:
        asked_after.append(route.request.headers.get("last-event-id"))
        if len(asked_after) > 1:
            route.continue_()
            return
        # The first connection delivers three deltas, then drops (no done event).
        frames = route.fetch().text().split("\n\n")
        deltas = [f for f in frames if "event: delta" in f][:3]
        kept_ids.extend(re.search(r"^id: (\S+)$", f, re.M).group(1) for f in deltas)
        route.fulfill(status=200, content_type="text/event-stream", body="\n\n".join(deltas) + "\n\n")

    page.route(re.compile(r"/api/v1/messages/\d+/stream$"), cut_the_first_connection)
    send_with_enter(page, "Keep going [demo:tokens=30] [demo:tps=30]")
    reply = last_reply(page)
    settled(reply)
    # The browser came back asking for what followed the third event, and got exactly that.
    assert asked_after[0] is None and asked_after[1] == kept_ids[-1]
    message_id = int(reply.get_attribute("data-message-id"))
    content = orm(lambda: Message.objects.get(pk=message_id).content)
    assert_streamed_exactly(streamed_texts(page), content)
    assert reply.get_attribute("data-status") == "done"
    assert not page.problems, page.problems


def test_network_and_server_errors_and_a_frozen_wallet_keep_the_draft(browser, live_server) -> None:
    from wallet.services import wallet_freeze

    account = orm(lambda: funded_wallet(make_user(EMAIL, password=PASSWORD), 2_000_000))
    page = open_page(browser)
    log_in(page, live_server)
    page.goto(live_server.url + "/chat/")
    page.get_by_label("Model").select_option("demo")
    box = page.get_by_label("Message")
    send_url = re.compile(r"/api/v1/conversations/\d+/messages$")

    page.route(send_url, lambda route: route.abort("internetdisconnected"))
    send_with_enter(page, "First try")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Could not reach Panels" in alert.inner_text()
    assert box.input_value() == "First try"
    page.unroute(send_url)

    page.route(
        send_url,
        lambda route: route.fulfill(status=500, content_type="text/html", body="<h1>Server Error (500)</h1>"),
    )
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => document.getElementById('chat-alert').textContent.includes('error 500')")
    assert "Your message was not sent and is still in the box" in alert.inner_text()
    assert box.input_value() == "First try"
    page.unroute(send_url)

    orm(lambda: wallet_freeze(account=account, reason="a disputed payment"))
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => document.getElementById('chat-alert').textContent.includes('frozen')")
    assert "a disputed payment" in alert.inner_text()
    assert box.input_value() == "First try"
    assert page.locator("article.msg").count() == 0
    # Dismissing the message hands the focus back to the box.
    alert.get_by_role("button", name="Dismiss").click()
    assert not alert.is_visible()
    assert box.evaluate("el => el === document.activeElement")
