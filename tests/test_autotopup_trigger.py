"""What starts an automatic top-up: a real chat reply's settlement crossing the threshold,
concurrent triggers (one attempt, one charge), the sweep as a backstop, and the offline
demo card (credited through the same fulfilment, or declined and paused)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.core import mail
from django.db import connection

from chat import services, worker
from chat.models import Conversation
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_helpers import stripe_settings
from tests.wallet_helpers import funded_wallet
from wallet.autotopups import autotopup_demo_card_save, autotopup_run, autotopups_sweep
from wallet.models import Account, AutoTopup, Entry, Topup
from wallet.selectors import ledger_audit
from wallet.topups import TopupsUnavailable

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

DOLLAR = 2_000_000


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Automatic top-ups handed to the queue; tests run them in-process."""
    ids: list[int] = []
    monkeypatch.setattr("wallet.autotopups.autotopup_queue", lambda *, account_id: ids.append(account_id))
    return ids


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe().start()
    with stripe_settings(server.url):
        yield server
    server.stop()


def demo_card_on(client, user, *, below: str, amount: str = "5", declines: bool = False) -> None:
    client.post("/wallet/auto-topup/card/", {"demo_card": "declines" if declines else "works"})
    answer = client.post("/wallet/auto-topup/", {"enabled": "on", "threshold_usd": below, "amount_usd": amount})
    assert answer.status_code == 302
    assert AutoTopup.objects.get(account__user=user).enabled


def test_a_chat_reply_that_crosses_the_threshold_triggers_it(alice, alice_client, chat_catalog, monkeypatch, queued):  # noqa: F811
    replies: list[int] = []
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: replies.append(message_id))
    account = funded_wallet(alice, DOLLAR // 2)
    demo_card_on(alice_client, alice, below="0.50")  # exactly the balance: not below yet
    assert queued == []
    conversation = Conversation.objects.create(user=alice)
    reply = services.message_send(user=alice, conversation=conversation, content="[demo:tokens=5] Hello", model="demo")
    assert queued == []  # a hold is not a spend

    worker.message_run(message_id=reply.pk)  # settles: available now below $0.50

    assert queued == [account.pk]
    autotopup_run(account_id=account.pk)
    (topup,) = Topup.objects.filter(kind=Topup.Kind.AUTO)
    assert topup.status == Topup.Status.PAID and topup.provider == Topup.Provider.DEMO
    entry = Entry.objects.get(kind=Entry.Kind.TOPUP)
    assert entry.idempotency_key == f"topup:auto_{topup.pk}" and entry.amount == 5 * DOLLAR
    reply.refresh_from_db()
    assert Account.objects.get(pk=account.pk).balance == DOLLAR // 2 - reply.cost + 5 * DOLLAR
    assert ledger_audit() == []


def test_concurrent_triggers_make_one_attempt_and_one_charge(fake, alice, alice_client, queued):
    alice_client.post("/wallet/auto-topup/card/")
    (session_id,) = fake.sessions
    fake.complete_setup(session_id)
    alice_client.get(f"/wallet/auto-topup/card/done/?session_id={session_id}")
    account = funded_wallet(alice, DOLLAR)
    alice_client.post("/wallet/auto-topup/", {"enabled": "on", "threshold_usd": "2", "amount_usd": "10"})
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def trigger() -> None:
        try:
            barrier.wait()
            outcomes.append(autotopup_run(account_id=account.pk))
        except Exception as exc:  # any error fails the test below
            outcomes.append(f"error: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not [o for o in outcomes if o.startswith("error")], outcomes
    (topup,) = Topup.objects.filter(kind=Topup.Kind.AUTO)
    assert topup.status == Topup.Status.PAID
    assert len(fake.payment_intents) == 1  # retries of the one attempt share its key
    assert Entry.objects.filter(kind=Entry.Kind.TOPUP).count() == 1
    assert Account.objects.get(pk=account.pk).balance == 11 * DOLLAR


def test_the_sweep_starts_what_a_lost_trigger_missed(alice, alice_client, queued):
    account = funded_wallet(alice, DOLLAR)
    demo_card_on(alice_client, alice, below="2")
    queued.clear()

    result = autotopups_sweep()

    assert result["queued"] == 1 and queued == [account.pk]


def test_the_demo_declining_card_pauses_and_emails_once(alice, alice_client, queued):
    account = funded_wallet(alice, DOLLAR)
    demo_card_on(alice_client, alice, below="2", declines=True)

    autotopup_run(account_id=account.pk)
    autotopups_sweep()

    (topup,) = Topup.objects.filter(kind=Topup.Kind.AUTO)
    assert topup.status == Topup.Status.FAILED
    setting = AutoTopup.objects.get()
    assert setting.paused and "demo declining card" in setting.paused_reason
    assert len(mail.outbox) == 1
    assert Account.objects.get(pk=account.pk).balance == DOLLAR

    alice_client.post("/wallet/auto-topup/resume/")  # resumed with the same card: declined again, emailed again
    autotopup_run(account_id=account.pk)
    assert len(mail.outbox) == 2
    assert Topup.objects.filter(kind=Topup.Kind.AUTO, status=Topup.Status.FAILED).count() == 2


def test_no_demo_card_where_the_demo_is_not_allowed(alice, settings):
    settings.DEMO_ALLOWED = False
    with pytest.raises(TopupsUnavailable):
        autotopup_demo_card_save(user=alice, declines=False)


def test_a_demo_card_saved_earlier_is_not_charged_where_the_demo_is_off(alice, alice_client, queued, settings):
    account = funded_wallet(alice, DOLLAR)
    demo_card_on(alice_client, alice, below="2")
    settings.DEMO_ALLOWED = False

    assert autotopup_run(account_id=account.pk) == "nothing due"
    assert not Topup.objects.filter(kind=Topup.Kind.AUTO).exists()
