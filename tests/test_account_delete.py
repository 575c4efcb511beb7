"""Deleting an account: the password confirms it, the page shows the balance forfeited,
chat content is erased, the ledger (amounts and references) is kept."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from chat.models import Conversation, Message
from chat.streams import stream_key
from openai_api.models import ApiCall
from panels.models import ApiKey
from panels.redis_client import get_redis
from tests.wallet_helpers import funded_wallet
from wallet.models import Entry, Hold, Topup
from wallet.services import wallet_hold, wallet_post

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
SECRET = "my secret merger plan"
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
URL = "/accounts/profile/delete/"


@pytest.fixture
def history(alice) -> dict:
    """Alice's wallet, one conversation with an image and a paid reply, an API call with content."""
    account = funded_wallet(alice, 5_000_000)
    conversation = Conversation.objects.create(user=alice, title=SECRET)
    Message.objects.create(conversation=conversation, role="user", content=SECRET, attachments=[PNG])
    reply = Message.objects.create(conversation=conversation, role="assistant", content=f"About {SECRET}: ...")
    hold = wallet_hold(account=account, amount=1_000, idempotency_key=f"reply:{reply.pk}")
    wallet_post(hold=hold, amount=900, memo="Demo model: 10 in / 20 out", reference=f"message:{reply.pk}")
    Message.objects.filter(pk=reply.pk).update(hold=hold, status="done", cost=900)
    ApiCall.objects.create(
        user=alice,
        status=ApiCall.Status.DONE,
        prompt=[{"role": "user", "content": SECRET}],
        reply=SECRET,
        response_body={"choices": [{"message": {"content": SECRET}}]},
        cost=0,
    )
    ApiKey.issue(user=alice, name="laptop")
    key = stream_key(reply)
    get_redis().xadd(key, {"data": SECRET})
    return {"reply": reply, "stream": key}


def test_the_page_shows_the_balance_forfeited_and_what_is_erased_and_kept(alice_client, history) -> None:
    html = alice_client.get(URL).content.decode()

    assert "Your balance of <strong>4,999,100 credits ($2.50)</strong> is forfeited" in html
    assert "Every conversation, with all its messages" in html and "images you attached" in html
    assert "The wallet&#x27;s ledger" in html or "The wallet's ledger" in html
    assert "but no message text" in html
    assert 'name="password" type="password"' in html


def test_an_empty_wallet_forfeits_nothing(alice_client) -> None:
    assert "Your wallet is empty, so nothing is forfeited." in alice_client.get(URL).content.decode()


def test_a_wrong_password_deletes_nothing(alice_client, alice, history) -> None:
    response = alice_client.post(URL, {"password": "not it"})

    assert response.status_code == 400
    assert "That is not your password. Nothing was deleted." in response.content.decode()
    alice.refresh_from_db()
    assert alice.is_active and Conversation.objects.filter(user=alice).exists()


def test_deleting_erases_chat_content_and_keeps_the_ledger(
    alice_client, alice, history, django_capture_on_commit_callbacks
) -> None:
    entries = list(Entry.objects.order_by("pk").values_list("pk", "kind", "amount", "reference", "digest"))
    holds = list(Hold.objects.order_by("pk").values_list("pk", "amount", "posted_amount", "reference"))

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(URL, {"password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/"
    assert not Conversation.objects.filter(user=alice).exists()
    assert not Message.objects.exists()
    assert not ApiKey.objects.filter(user=alice).exists()
    call = ApiCall.objects.get(user=alice)
    assert (call.prompt, call.reply, call.response_body, call.cost) == (None, "", None, 0)
    assert get_redis().exists(history["stream"]) == 0
    # The ledger is exactly as it was, and still adds up.
    assert list(Entry.objects.order_by("pk").values_list("pk", "kind", "amount", "reference", "digest")) == entries
    assert list(Hold.objects.order_by("pk").values_list("pk", "amount", "posted_amount", "reference")) == holds
    call_command("wallet", "audit")
    # No text of the conversation is left in any table the account keeps.
    for model, fields in (
        (Entry, ["memo", "reference"]),
        (Hold, ["reference", "reason"]),
        (Topup, ["checkout_url"]),
    ):
        for field in fields:
            assert not model.objects.filter(**{f"{field}__contains": "secret"}).exists(), (model, field)
    alice.refresh_from_db()
    assert not alice.is_active and alice.email.endswith("@deleted.invalid")
    assert not Client().login(username="alice@example.com", password=PASSWORD)


def test_an_account_with_a_reply_running_is_not_deleted(alice_client, alice, history) -> None:
    Message.objects.filter(pk=history["reply"].pk).update(status="streaming")

    response = alice_client.post(URL, {"password": PASSWORD})

    assert response.status_code == 409
    assert "A reply is still being written" in response.content.decode()
    assert Message.objects.filter(conversation__user=alice).count() == 2
    assert get_user_model().objects.get(pk=alice.pk).is_active
