"""The chat page (/chat/, /chat/c/<id>/) and the ledger's link to a reply (/chat/m/<id>/)."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from chat.models import Conversation, Message, ModelSpec

pytestmark = pytest.mark.django_db


def conversation_of(user, title: str = "Tax question") -> Conversation:
    return Conversation.objects.create(user=user, title=title)


def reply_in(conversation: Conversation, **fields) -> Message:
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="Hi",
        requested_model=fields.get("requested_model", ""),
    )
    defaults = {
        "role": Message.Role.ASSISTANT,
        "status": Message.Status.DONE,
        "content": "Hello **there**",
        "model": ModelSpec.objects.get(slug="demo"),
        "input_tokens": 12,
        "output_tokens": 40,
        "cost": 26,
    }
    defaults.update(fields)
    return Message.objects.create(conversation=conversation, **defaults)


def config_of(response) -> dict:
    match = re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', response.content.decode())
    assert match, "the page carries its configuration as JSON"
    return json.loads(match.group(1))


def options_of(response) -> list[tuple[str, str, bool]]:
    html = response.content.decode()
    select = re.search(r'<select id="model-select".*?</select>', html, re.S).group(0)
    return [
        (value, re.sub(r"\s+", " ", label).strip(), " disabled" in attrs)
        for value, attrs, label in re.findall(r'<option value="([^"]*)"([^>]*)>(.*?)</option>', select, re.S)
    ]


def test_anonymous_visitor_is_sent_to_log_in(client, alice) -> None:
    conversation = conversation_of(alice)
    for url in (
        reverse("chat"),
        reverse("chat_conversation", args=[conversation.pk]),
        reverse("message_goto", args=[1]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login") + "?next=")


def test_new_chat_page_renders_for_a_signed_in_user(alice_client) -> None:
    response = alice_client.get(reverse("chat"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<textarea id="composer-input"' in html
    assert '<label for="composer-input"' in html and '<label for="model-select"' in html
    assert 'id="send-button"' in html and 'id="stop-button"' in html
    assert "No conversations yet." in html
    assert '<script src="/static/js/chat.js" defer></script>' in html
    # CSP: script-src 'self' only, so no inline script or handler anywhere on the page.
    assert re.search(r"<script(?![^>]*(src=|type=\"application/json\"))", html) is None
    assert re.search(r"\son[a-z]+=", html) is None
    config = config_of(response)
    assert config["conversation_id"] is None
    assert config["initial_model"] == "auto"
    assert config["topup_url"] == "/wallet/topup/"
    assert config["csrf_token"]


def test_owner_sees_the_conversation_with_messages_and_sidebar(alice_client, alice) -> None:
    older = conversation_of(alice, "Older chat")
    conversation = conversation_of(alice, "Tax question")
    reply = reply_in(conversation, requested_model="demo")
    response = alice_client.get(reverse("chat_conversation", args=[conversation.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<h1 id="chat-title" class="chat-title">Tax question</h1>' in html
    # Newest first, the open one marked as current.
    assert html.index(">Tax question</a>") < html.index(">Older chat</a>")
    assert f'href="/chat/c/{conversation.pk}/" aria-current="page"' in html
    assert f'href="/chat/c/{older.pk}/"' in html
    # The reply is server-rendered, sanitised Markdown with its usage and cost.
    assert f'id="message-{reply.pk}"' in html
    assert "Hello <strong>there</strong>" in html
    assert "12 in / 40 out tokens" in html
    assert "26 credits ($0.000013)" in html
    assert config_of(response)["conversation_id"] == conversation.pk
    assert config_of(response)["initial_model"] == "demo"  # remembered per conversation


def test_auto_reply_shows_the_model_chosen_and_why(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply_in(conversation, requested_model="auto", routed_by="short factual question", usage_estimated=True)
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert "Auto chose Demo model" in html
    assert "why: short factual question" in html
    assert ">estimated</span>" in html


def test_model_text_in_history_is_inert(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply_in(conversation, content='<script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror="alert(3)">')
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert "alert(1)" in html and "<script>alert(1)" not in html
    # The Markdown as written stays on the page only as escaped text (Copy puts it on the
    # clipboard), never as a link or a tag.
    assert not re.search(r"(?:href|src|action)\s*=\s*[\"']?\s*javascript:", html, re.I)
    assert 'data-source="&lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(2))' in html
    assert "<img src=x" not in html


def test_failed_reply_shows_reason_and_retry(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply_in(
        conversation,
        status=Message.Status.FAILED,
        content="",
        cost=None,
        input_tokens=None,
        output_tokens=None,
        error_message="The model provider is rate limiting requests",
    )
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert "This reply failed: The model provider is rate limiting requests. You were not charged." in html
    assert 'class="secondary small retry-button">Retry</button>' in html


def test_reply_in_progress_is_left_for_the_script_to_resume(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply = reply_in(conversation, status=Message.Status.STREAMING, content="", cost=None)
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert f'id="message-{reply.pk}" data-message-id="{reply.pk}" data-status="streaming" aria-busy="true"' in html


def test_bob_gets_404_for_alices_conversation_and_message(client, alice, bob) -> None:
    conversation = conversation_of(alice)
    reply = reply_in(conversation)
    client.force_login(bob)
    assert client.get(reverse("chat_conversation", args=[conversation.pk])).status_code == 404
    assert client.get(reverse("message_goto", args=[reply.pk])).status_code == 404
    # And bob's own sidebar does not list it.
    html = client.get(reverse("chat")).content.decode()
    assert "Tax question" not in html


def test_unknown_ids_are_404(alice_client) -> None:
    assert alice_client.get(reverse("chat_conversation", args=[999999])).status_code == 404
    assert alice_client.get(reverse("message_goto", args=[999999])).status_code == 404


def test_message_goto_redirects_to_the_reply_in_its_conversation(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply = reply_in(conversation)
    response = alice_client.get(reverse("message_goto", args=[reply.pk]))
    assert response.status_code == 302
    assert response["Location"] == f"/chat/c/{conversation.pk}/#message-{reply.pk}"
    assert reverse("message_goto", args=[reply.pk]) == f"/chat/m/{reply.pk}/"


def test_dropdown_lists_auto_then_models_with_prices(alice_client, monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MISTRAL_API_KEY", "test-key")
    response = alice_client.get(reverse("chat"))
    options = options_of(response)
    values = [value for value, _, _ in options]
    assert values[0] == "auto"
    assert values[1:] == list(
        ModelSpec.objects.filter(enabled=True).order_by("sort_order", "name").values_list("slug", flat=True)
    )
    by_value = {value: (label, disabled) for value, label, disabled in options}
    assert by_value["auto"][1] is False
    assert by_value["auto"][0].startswith("Auto")
    assert by_value["demo"] == ("Demo model (demo) — $0.15 in / $0.60 out per 1M tokens", False)
    assert by_value["mistral-small"] == ("Mistral Small — $0.15 in / $0.60 out per 1M tokens", False)
    label, disabled = by_value["gpt-4o"]
    assert disabled
    assert label == "GPT-4o — $2.50 in / $10.00 out per 1M tokens — temporarily unavailable"
    label, disabled = by_value["claude-sonnet"]
    assert disabled and "temporarily unavailable" in label and "$2.00 in / $10.00 out" in label
    assert "API_KEY" not in response.content.decode()


def test_disabled_models_are_left_out_and_auto_is_selected_by_default(alice_client) -> None:
    ModelSpec.objects.filter(slug="gemini-flash").update(enabled=False)
    response = alice_client.get(reverse("chat"))
    options = options_of(response)
    assert "gemini-flash" not in [value for value, _, _ in options]
    assert '<option value="auto" data-help="' in response.content.decode()
    assert re.search(r'<option value="auto"[^>]* selected>', response.content.decode())


def test_remembered_model_that_became_unavailable_falls_back_to_auto(alice_client, alice, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conversation = conversation_of(alice)
    reply_in(conversation, requested_model="gpt-4o")
    response = alice_client.get(reverse("chat_conversation", args=[conversation.pk]))
    assert config_of(response)["initial_model"] == "auto"


def test_config_describes_models_for_the_script(alice_client) -> None:
    config = config_of(alice_client.get(reverse("chat")))
    demo = next(m for m in config["models"] if m["slug"] == "demo")
    assert demo == {"slug": "demo", "name": "Demo model", "available": True, "image_input": True, "is_demo": True}
    mistral = next(m for m in config["models"] if m["slug"] == "mistral-small")
    assert mistral["image_input"] is False
    assert 0 < config["max_image_bytes"] <= 5 * 1024 * 1024
    assert config["conversation_url"] == "/chat/c/{id}/"


def test_message_api_gives_a_settled_reply_as_sanitised_html(alice_client, alice) -> None:
    # The page swaps the streamed plain text for this once the reply settles.
    conversation = conversation_of(alice)
    reply = reply_in(conversation, content="**Hi** <script>alert(1)</script> [x](javascript:alert(2))")
    data = alice_client.get(f"/api/v1/messages/{reply.pk}").json()
    assert data["html"].startswith("<p><strong>Hi</strong> &lt;script&gt;")
    assert "javascript:" not in data["html"]
    user_message = conversation.messages.get(role=Message.Role.USER)
    assert alice_client.get(f"/api/v1/messages/{user_message.pk}").json()["html"] is None
    streaming = reply_in(conversation, status=Message.Status.STREAMING, content="")
    assert alice_client.get(f"/api/v1/messages/{streaming.pk}").json()["html"] is None


def test_a_frozen_wallet_is_explained_on_the_page(alice_client, alice) -> None:
    from tests.wallet_helpers import funded_wallet
    from wallet.services import wallet_freeze

    wallet_freeze(account=funded_wallet(alice, 1000), reason="a disputed payment")
    html = alice_client.get(reverse("chat")).content.decode()
    assert "Your wallet is frozen: a disputed payment. New messages are paused" in html


@pytest.mark.parametrize(
    "stored",
    [
        "The demo model had an error. Nothing was charged.",
        "The demo model had an error; nothing was charged.",
        "The demo model had an error. Nothing was charged; please try again in a moment.",
    ],
)
def test_a_failed_reply_says_once_that_nothing_was_charged(alice_client, alice, stored: str) -> None:
    conversation = conversation_of(alice)
    reply_in(conversation, status=Message.Status.FAILED, content="", cost=0, error_message=stored)
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert "This reply failed: The demo model had an error. You were not charged.</p>" in html
    assert html.lower().count("charged") == 1


def test_auto_reason_is_shown_with_a_typographic_arrow(alice_client, alice) -> None:
    conversation = conversation_of(alice)
    reply_in(conversation, requested_model="auto", routed_by="Auto -> Demo model: short factual question")
    html = alice_client.get(reverse("chat_conversation", args=[conversation.pk])).content.decode()
    assert '<span class="meta-route">Auto → Demo model: short factual question</span>' in html
    assert "->" not in html.replace("-->", "")


def test_auto_takes_images_only_when_both_tiers_read_them(alice_client, monkeypatch, settings) -> None:
    # No provider key: the demo model answers both tiers, and it reads images.
    assert config_of(alice_client.get(reverse("chat")))["auto_images"] == {"allowed": True, "why": ""}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert config_of(alice_client.get(reverse("chat")))["auto_images"]["allowed"] is True  # GPT-4o mini and GPT-4o
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test")
    settings.AUTO_CHEAP_MODEL = "mistral-small"
    assert config_of(alice_client.get(reverse("chat")))["auto_images"] == {
        "allowed": False,
        "why": "Auto can't take images: Mistral Small (cheap tier) does not read images. "
        "Pick a model that reads images to attach one.",
    }
