"""A /v1 call's settlement, counted: on PostgreSQL the call's end and its post are one
statement committed through the ledger's group commit (nothing on the caller's own
connection), with the same outcomes as the transaction it replaced."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from openai_api import cache
from openai_api.models import ApiCall
from openai_api.services import Begun, call_begin, call_finish, calls_fail_stale
from openai_api.upstream import Usage
from panels.models import ApiKey
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Entry, Hold
from wallet.selectors import ledger_audit

pytestmark = [pytest.mark.money, pytest.mark.django_db(transaction=True)]

START = 1_000_000


@pytest.fixture
def begun(alice, chat_catalog) -> Begun:  # noqa: F811
    cache.clear()
    funded_wallet(alice, START)
    _, secret = ApiKey.issue(user=alice, name="statements")
    body = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = call_begin(authorization=f"Bearer {secret}", body=json.dumps(body).encode(), idempotency_key="once")
    assert isinstance(started, Begun)
    return started


def _finish(begun: Begun) -> object:
    return call_finish(
        begun=begun, text="hello there", usage=Usage(5, 2), finish_reason="stop", disconnected=False, failure=None
    )


def test_the_end_and_the_post_are_one_statement_off_the_callers_connection(begun, alice):
    with CaptureQueriesContext(connection) as queries:
        finished = _finish(begun)
    sql = [" ".join(q["sql"].split()) for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert sql == [], "\n".join(sql)  # the group commit's thread ran it
    else:
        assert any(s.startswith("UPDATE") and "openai_api_apicall" in s for s in sql)
    call = ApiCall.objects.get(pk=begun.call.pk)
    assert (call.status, call.cost, call.input_tokens, call.output_tokens) == ("done", finished.cost, 5, 2)
    assert finished.cost > 0 and call.finished_at is not None
    # The first outcome of its Idempotency-Key, kept as JSON for a retry.
    assert call.response_status == 200
    assert call.response_body["choices"][0]["message"]["content"] == "hello there"
    assert call.response_body["panels"]["cost"] == finished.cost
    hold = Hold.objects.get(pk=call.hold_id)
    assert (hold.status, hold.posted_amount) == (Hold.Status.POSTED, finished.cost)
    assert Entry.objects.get(kind=Entry.Kind.USAGE, hold=hold).amount == finished.cost
    wallet = Account.objects.get(user=alice)
    assert (wallet.balance, wallet.held) == (START - finished.cost, 0)
    assert ledger_audit() == []


def test_a_call_the_sweep_ended_first_is_not_charged(begun, alice):
    hold = Hold.objects.get(pk=begun.call.hold_id)
    assert calls_fail_stale(now=hold.expires_at) == 1
    finished = _finish(begun)
    assert finished.cost == 0 and finished.status == ApiCall.Status.FAILED
    assert ApiCall.objects.get(pk=begun.call.pk).status == ApiCall.Status.FAILED
    assert Hold.objects.get(pk=hold.pk).status == Hold.Status.VOIDED
    assert not Entry.objects.filter(kind=Entry.Kind.USAGE).exists()
    wallet = Account.objects.get(user=alice)
    assert (wallet.balance, wallet.held) == (START, 0)
    assert ledger_audit() == []
