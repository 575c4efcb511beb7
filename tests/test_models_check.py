# ruff: noqa: F811  (pytest fixtures imported from tests.e2e_servers and tests.provider_fakes)
"""`models check` against the providers' fakes: a model its provider no longer lists is marked
unavailable with the reason for operators and disappears from the dropdown; users only ever
read "temporarily unavailable". And a self-hosted model (the demo server registered through
`catalog add`) answers and is billed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from chat import services, worker
from chat.costs import reply_cost
from chat.errors import ModelUnavailable
from chat.models import Conversation, Message, ModelSpec
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401
from tests.provider_fakes import fakes  # noqa: F401
from tests.wallet_helpers import funded_wallet
from wallet.models import Account
from wallet.selectors import ledger_audit

pytestmark = [pytest.mark.django_db(transaction=True)]


def check() -> str:
    out = io.StringIO()
    call_command("models", "check", stdout=out)
    return out.getvalue()


def test_a_retired_model_is_marked_unavailable_and_leaves_the_dropdown(alice_client, alice, chat_catalog, fakes):
    out = check()
    assert "gpt-4o: ok" in out and "claude-sonnet: ok" in out and "gemini-flash: ok" in out
    assert "mistral-small: ok" in out
    # OpenAI retires the snapshot: it is no longer in its model list.
    fakes["openai"].models.remove("gpt-4o-2024-11-20")
    out = check()
    assert "gpt-4o: UNAVAILABLE — OpenAI no longer lists gpt-4o-2024-11-20" in out
    spec = ModelSpec.objects.get(slug="gpt-4o")
    assert not spec.available and spec.checked_at is not None
    assert "no longer lists gpt-4o-2024-11-20" in spec.operator_reason
    assert spec.unavailable_reason == "temporarily unavailable"

    page = alice_client.get(reverse("chat")).content.decode()
    assert 'value="gpt-4o"' not in page and 'value="gpt-4o-mini"' in page
    assert "no longer lists" not in page and "OPENAI_API_KEY" not in page
    models = {m["id"]: m for m in alice_client.get("/api/v1/models").json()}
    assert models["gpt-4o"]["available"] is False
    assert models["gpt-4o"]["unavailable_reason"] == "temporarily unavailable"
    conversation = Conversation.objects.create(user=alice)
    with pytest.raises(ModelUnavailable) as refused:
        services.message_send(user=alice, conversation=conversation, content="hi", model="gpt-4o")
    assert "temporarily unavailable" in refused.value.message and "API_KEY" not in refused.value.message

    # Listed again (a mistake undone): the next check brings it back.
    fakes["openai"].models.append("gpt-4o-2024-11-20")
    assert "gpt-4o: ok" in check()
    assert ModelSpec.objects.get(slug="gpt-4o").available


def test_a_refused_key_marks_the_providers_models_and_an_unreachable_one_changes_nothing(
    chat_catalog,
    fakes,
    settings,
    monkeypatch,
):
    monkeypatch.setenv("MISTRAL_API_KEY", "revoked")
    assert "mistral-small: UNAVAILABLE — Mistral refused the model list (provider_auth, HTTP 401)" in check()
    monkeypatch.setenv("MISTRAL_API_KEY", "key-mistral")
    check()
    settings.PROVIDER_BASE_URLS = {**settings.PROVIDER_BASE_URLS, "gemini": "http://127.0.0.1:9/v1beta/openai"}
    out = check()
    assert "gemini-flash: skipped — not checked: Could not reach the model provider." in out
    assert ModelSpec.objects.get(slug="gemini-flash").available


def test_without_a_key_a_model_is_not_checked_and_users_are_not_told_the_variable(chat_catalog, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert "claude-sonnet: skipped — not checked: ANTHROPIC_API_KEY is not set" in check()
    spec = ModelSpec.objects.get(slug="claude-sonnet")
    assert spec.unavailable_reason == "temporarily unavailable"


@pytest.mark.money
def test_the_demo_server_registered_as_a_self_hosted_model_answers_and_is_billed(alice, chat_catalog, monkeypatch):
    monkeypatch.setattr("chat.tasks.message_enqueue", lambda *, message_id: None)
    call_command(
        "catalog", "add", "local-demo", "--name", "Local server", "--base-url", chat_catalog.base_url,
        "--upstream-id", "demo", "--input-price", "0.05", "--output-price", "0.1", "--context-window", "16000",
        "--max-output-tokens", "256", stdout=io.StringIO(),
    )  # fmt: skip
    funded_wallet(alice, 1_000_000)
    conversation = Conversation.objects.create(user=alice)
    reply = services.message_send(
        user=alice, conversation=conversation, content="[demo:tokens=6] hi", model="local-demo"
    )
    assert reply.prices == {"input": "0.0500", "output": "0.1000", "tiers": []}
    worker.message_run(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == Message.Status.DONE and reply.output_tokens == 6 and not reply.usage_estimated
    expected = reply_cost(reply.prices, input_tokens=reply.input_tokens, output_tokens=6)
    assert reply.cost == expected > 0
    assert Account.objects.get(user=alice).balance == 1_000_000 - expected
    assert ledger_audit() == []


def test_workers_run_the_check_once_per_period_across_the_fleet(chat_catalog, fakes, settings):
    from chat.availability import LOCK_KEY, models_check_if_due
    from panels.redis_client import get_redis

    get_redis().delete(LOCK_KEY)
    fakes["mistral"].models.remove("mistral-small-2603")
    assert models_check_if_due(every_seconds=60) is True
    assert not ModelSpec.objects.get(slug="mistral-small").available
    # A second worker in the same period does not ask the providers again.
    asked = len(fakes["mistral"].requests)
    assert models_check_if_due(every_seconds=60) is False
    assert len(fakes["mistral"].requests) == asked
    assert models_check_if_due(every_seconds=0) is False  # MODELS_CHECK_SECONDS=0: off
    get_redis().delete(LOCK_KEY)
