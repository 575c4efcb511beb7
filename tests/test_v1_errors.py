"""The OpenAI-compatible API's refusals: OpenAI's error shape `{"error": {message, type,
param, code}}` with the right status, and nothing held or charged."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from chat.models import ModelSpec
from openai_api.models import ApiCall
from panels.models import ApiKey
from tests.wallet_helpers import funded_wallet
from wallet.models import Account, Hold
from wallet.services import cost_in_credits

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(alice) -> str:
    funded_wallet(alice, 1_000_000)
    _, secret = ApiKey.issue(user=alice, name="errors")
    return secret


def post(client, key: str | None, body: dict | str, **headers):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post("/v1/chat/completions", data=data, content_type="application/json", **headers)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


HELLO = [{"role": "user", "content": "hello"}]


def nothing_held(user) -> None:
    account = Account.objects.get(user=user)
    assert account.held == 0 and not Hold.objects.filter(status=Hold.Status.PENDING).exists()


def test_a_missing_or_bad_key_is_401(client, key):
    error = error_of(post(client, None, {"model": "demo", "messages": HELLO}), 401)
    assert error["code"] == "missing_api_key" and error["type"] == "authentication_error"
    error = error_of(post(client, "pnl_dead_beef", {"model": "demo", "messages": HELLO}), 401)
    assert error["code"] == "invalid_api_key"


def test_an_expired_or_revoked_key_is_401(client, alice, key):
    api_key = ApiKey.objects.get(user=alice)
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert error_of(post(client, key, {"model": "demo", "messages": HELLO}), 401)["code"] == "invalid_api_key"
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=None)
    api_key.revoke()
    assert error_of(post(client, key, {"model": "demo", "messages": HELLO}), 401)["code"] == "invalid_api_key"


def test_an_unknown_model_is_404(client, key):
    error = error_of(post(client, key, {"model": "gpt-17", "messages": HELLO}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model" and "gpt-17" in error["message"]


def test_a_model_without_its_provider_key_is_503(client, key):
    error = error_of(post(client, key, {"model": "gpt-4o", "messages": HELLO}), 503)
    assert error["code"] == "model_unavailable"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "demo", "messages": HELLO, "n": 2}, "n", "unsupported_parameter"),
        ({"model": "demo", "messages": HELLO, "tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
        (
            {"model": "demo", "messages": HELLO, "response_format": {"type": "json_object"}},
            "response_format",
            "unsupported_parameter",
        ),
        ({"model": "demo", "messages": HELLO, "logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"model": "demo", "messages": HELLO, "bogus": 1}, "bogus", "unknown_parameter"),
        ({"model": "demo", "messages": []}, "messages", "missing_required"),
        ({"messages": HELLO}, "model", "missing_required"),
        ({"model": "demo", "messages": HELLO, "temperature": 3}, "temperature", "invalid_value"),
        ({"model": "demo", "messages": HELLO, "top_p": -0.1}, "top_p", "invalid_value"),
        ({"model": "demo", "messages": HELLO, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"model": "demo", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        (
            {"model": "demo", "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
            "invalid_value",
        ),
        ({"model": "demo", "messages": [{"role": "tool", "content": "x"}]}, "messages[0]", "unsupported_parameter"),
        (
            {"model": "demo", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
            "invalid_value",
        ),
        ({"model": "demo", "messages": HELLO, "max_tokens": 100_000}, "max_tokens", "invalid_value"),
    ],
)
def test_a_bad_or_unsupported_body_is_a_400_naming_the_parameter(client, alice, key, body, param, code):
    error = error_of(post(client, key, body), 400)
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    nothing_held(alice)
    assert not ApiCall.objects.exists()


def test_defaults_that_clients_always_send_are_accepted_by_the_parser():
    from openai_api.request import parse

    body = {"model": "demo", "messages": HELLO, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "tools": None}
    request = parse(json.dumps(body).encode())
    assert request.model == "demo" and request.max_tokens is None


def test_not_json_is_a_400(client, key):
    assert error_of(post(client, key, "{not json"), 400)["code"] == "invalid_json"


def test_too_many_tokens_for_the_context_is_a_400(client, alice, key):
    long = "word " * 70_000  # about 87,500 tokens against the demo model's 16,000
    error = error_of(post(client, key, {"model": "demo", "messages": [{"role": "user", "content": long}]}), 400)
    assert error["code"] == "context_length_exceeded" and "maximum context length is 16000 tokens" in error["message"]
    nothing_held(alice)


def test_a_wallet_that_cannot_cover_the_worst_case_is_402_saying_what_it_affords(client, bob):
    funded_wallet(bob, 100)  # demo prices: 0.15 / 0.60 USD per 1M tokens; 1 token out = 1.2 credits
    _, secret = ApiKey.issue(user=bob)
    error = error_of(post(client, secret, {"model": "demo", "messages": HELLO, "max_tokens": 500}), 402)
    assert error["code"] == "insufficient_credits" and error["type"] == "insufficient_quota"
    # The input estimate is 9 tokens ("hello": 2, framing 4, priming 3): 81 output tokens fit, 82 do not.
    demo = ModelSpec.objects.get(slug="demo")
    prices = {"input_price": demo.input_price, "output_price": demo.output_price}
    assert cost_in_credits(input_tokens=9, output_tokens=81, **prices) <= 100
    assert cost_in_credits(input_tokens=9, output_tokens=82, **prices) > 100
    assert error["affordable_output_tokens"] == 81
    assert "covers about 81 output tokens" in error["message"]
    nothing_held(bob)
    assert ApiCall.objects.get().status == ApiCall.Status.REFUSED


def test_a_get_on_completions_is_405_and_models_needs_a_key(client, key):
    response = client.get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert error_of(client.get("/v1/models"), 401)["code"] == "missing_api_key"
    listed = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == "auto"
