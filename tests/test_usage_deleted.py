"""Deleting a conversation leaves the usage page's figures as they were: the ledger keeps
every charge, and the usage page keeps counting it."""

from __future__ import annotations

import pytest

from chat.models import Conversation, DeletedReplyUsage
from chat.usage import usage_report
from tests.test_usage_page import reply
from tests.wallet_helpers import funded_wallet
from wallet.services import wallet_hold, wallet_post

pytestmark = pytest.mark.django_db


def _charged(user, conversation, slug, cost, **kwargs):
    """A reply in `conversation` and its ledger charge, as the worker settles one."""
    message = reply(user, slug, cost=cost, **kwargs)
    message.conversation = conversation
    message.save()
    hold = wallet_hold(
        account=user.wallet, amount=cost, idempotency_key=f"hold:{message.pk}", reference=f"message:{message.pk}"
    )
    wallet_post(hold=hold, amount=cost)
    return message


def _ledger_spent(user) -> int:
    from wallet.models import Entry

    return sum(e.amount for e in Entry.objects.filter(kind=Entry.Kind.USAGE, debit_account=user.wallet))


def test_deleting_a_conversation_keeps_spent_equal_to_the_ledger(alice, alice_client):
    funded_wallet(alice, 1_000_000)
    doomed = Conversation.objects.create(user=alice, title="to delete")
    kept = Conversation.objects.create(user=alice, title="kept")
    _charged(alice, doomed, "gpt-4o-mini", 900, input_tokens=1_000, output_tokens=500)
    _charged(alice, doomed, "gpt-4o", 50_000, input_tokens=2_000, output_tokens=1_000, days_ago=3)
    kept_reply = reply(alice, "gpt-4o-mini", input_tokens=400, output_tokens=150, cost=300, auto=False)
    kept_reply.conversation = kept
    kept_reply.save()
    before = usage_report(user=alice)

    response = alice_client.delete(f"/api/v1/conversations/{doomed.pk}")

    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=doomed.pk).exists()
    after = usage_report(user=alice)
    assert after.total == before.total
    assert after.total.credits == 51_200 and after.total.messages == 3
    assert [(m.slug, m.tally) for m in after.models] == [(m.slug, m.tally) for m in before.models]
    assert after.savings == before.savings
    assert DeletedReplyUsage.objects.filter(user=alice).count() == 2
    # Spent on the page agrees with what the ledger charged (the kept reply was not charged).
    assert after.total.credits - 300 == _ledger_spent(alice) == 50_900
    html = alice_client.get("/usage/").content.decode()
    assert '<strong id="usage-total-credits">51,200</strong>' in html


def test_deleting_an_empty_or_unbilled_conversation_keeps_nothing(alice, alice_client):
    reply(alice, "gpt-4o-mini", input_tokens=0, output_tokens=0, cost=0, status="failed")
    conversation = Conversation.objects.get(user=alice)

    assert alice_client.delete(f"/api/v1/conversations/{conversation.pk}").status_code == 204
    assert not DeletedReplyUsage.objects.exists()
    assert usage_report(user=alice).empty
