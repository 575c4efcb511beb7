"""The openai wrapper, against the demo model server over HTTP."""

from __future__ import annotations

import httpx2
import openai
import pytest

from chat import providers
from chat.demo_server import estimate_prompt_tokens
from tests.e2e_servers import chat_catalog, demo_server  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(chat_catalog):  # noqa: F811
    return chat_catalog


def run(spec, text: str, **kwargs) -> list[providers.StreamChunk]:
    messages = [{"role": "user", "content": text}]
    return list(providers.chat_stream(spec=spec, messages=messages, **kwargs))


def test_a_streamed_reply_carries_its_text_and_the_reported_usage(demo):
    chunks = run(demo, "[demo:tokens=4] hello")
    text = "".join(c.text for c in chunks)
    assert text.startswith("Demo reply to:")
    usage = [c.usage for c in chunks if c.usage is not None]
    prompt = estimate_prompt_tokens([{"role": "user", "content": "[demo:tokens=4] hello"}])
    assert usage == [providers.Usage(input_tokens=prompt, output_tokens=4)]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_max_tokens_comes_from_the_catalog(demo):
    type(demo).objects.filter(pk=demo.pk).update(max_output_tokens=3)
    demo.refresh_from_db()
    chunks = run(demo, "[demo:tokens=50] hello")
    assert [c.usage.output_tokens for c in chunks if c.usage] == [3]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]


def test_one_client_per_endpoint_and_no_sdk_retries(demo):
    from chat.providers import openai_sdk

    client = openai_sdk.client(base_url=demo.base_url, api_key=demo.api_key)
    assert openai_sdk.client(base_url=demo.base_url, api_key=demo.api_key) is client
    assert client.max_retries == 0
    assert str(client.base_url).rstrip("/") == demo.base_url.rstrip("/")


def test_streamed_replies_reuse_one_connection(demo, demo_server):  # noqa: F811
    """The body is read past `[DONE]` to its end, so the connection goes back to the pool
    (the SDK's own stream closes it there, and each call would open a new one)."""
    run(demo, "[demo:tokens=2] warm")  # this endpoint's client has a connection now
    before = demo_server.server.connections_opened
    for _ in range(3):
        assert "".join(c.text for c in run(demo, "[demo:tokens=3] again"))
    assert demo_server.server.connections_opened == before


@pytest.mark.parametrize("api", ["openai", "gemini", "mistral", "openai_compatible"])
def test_the_body_needs_none_of_the_sdks_parameter_transform(api):
    """The request is sent as `request_body` builds it, skipping the SDK's transform of
    `create`'s parameters: for every body it builds, that transform changes nothing."""
    from openai._utils import maybe_transform
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

    from chat.providers import ADAPTERS, openai_sdk

    messages = providers.to_openai_messages(
        [
            ("system", "Be brief.", []),
            ("user", "look", [{"type": "image", "url": "data:image/png;base64,AAAA"}]),
            ("assistant", "a cat", []),
            ("user", "and now?", []),
        ]
    )
    body = openai_sdk.request_body(
        caps=ADAPTERS[api].capabilities("some-model"),
        model="some-model",
        messages=messages,
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
    )
    assert maybe_transform(body, CompletionCreateParamsStreaming) == body


def test_an_error_event_mid_stream_is_a_provider_error():
    from chat.providers import openai_sdk

    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        b": a comment\n\n"
        b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    )
    request = httpx2.Request("POST", "http://provider.test/v1/chat/completions")
    response = httpx2.Response(200, request=request, content=body)
    reply = providers.ReplyStream(
        openai_sdk._chunks(
            response,
            openai_sdk.Capabilities(
                stream_options=True, usage_unasked=False, output_tokens_param="max_tokens", image_formats=frozenset()
            ),
        ),
        close=response.close,
        translate=providers.translate_error,
        estimate_input=lambda: 0,
    )
    received = []
    with pytest.raises(providers.ProviderError) as caught:
        for chunk in reply:
            received.append(chunk.text)
    assert received == ["Hel"]
    assert caught.value.code == "provider_error" and "overloaded" in caught.value.message


def test_a_body_cut_after_done_still_ends_the_reply_cleanly():
    from chat.providers import openai_sdk

    def body():
        yield b'data: {"choices":[{"delta":{"content":"whole"},"finish_reason":"stop"}]}\n\n'
        yield b"data: [DONE]\n\n"
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")

    response = httpx2.Response(200, content=body(), request=httpx2.Request("GET", "http://provider.test/"))
    caps = openai_sdk.Capabilities(
        stream_options=True, usage_unasked=False, output_tokens_param="max_tokens", image_formats=frozenset()
    )
    assert [c.text for c in openai_sdk._chunks(response, caps)] == ["whole"]


def test_events_split_over_lines_and_a_missing_last_blank_line_are_read():
    from chat.providers import openai_sdk

    body = b'data: {"choices":[{"delta":\ndata: {"content":"a"}}]}\n\ndata:{"choices":[{"delta":{"content":"b"}}]}'
    response = httpx2.Response(200, content=body, request=httpx2.Request("GET", "http://provider.test/"))
    assert [
        c.text
        for c in openai_sdk._chunks(
            response,
            openai_sdk.Capabilities(
                stream_options=True, usage_unasked=False, output_tokens_param="max_tokens", image_formats=frozenset()
            ),
        )
    ] == ["a", "b"]


def test_a_429_is_transient_and_carries_retry_after(demo):
    with pytest.raises(providers.ProviderError) as caught:
        run(demo, "[demo:fail=429] hi")
    err = caught.value
    assert (err.code, err.transient, err.status, err.retry_after) == ("rate_limited", True, 429, 1.0)


def test_a_500_is_transient(demo):
    with pytest.raises(providers.ProviderError) as caught:
        run(demo, "[demo:fail=500] hi")
    assert caught.value.code == "provider_error" and caught.value.transient and "HTTP 500" in caught.value.message


def test_a_400_is_final_and_says_what_the_provider_said(demo):
    with pytest.raises(providers.ProviderError) as caught:
        run(demo, "[demo:bogus] hi")
    err = caught.value
    assert err.code == "provider_rejected" and not err.transient
    assert "unknown directive" in err.message


def test_a_cut_stream_raises_after_the_text_it_delivered(demo):
    received = []
    with pytest.raises(providers.ProviderError) as caught:
        for chunk in providers.chat_stream(
            spec=demo, messages=[{"role": "user", "content": "[demo:fail=cut][demo:cut_after=2] hi"}]
        ):
            received.append(chunk.text)
    assert "".join(received) == "Demo reply "
    assert caught.value.transient


def test_a_silent_model_times_out(demo, settings):
    settings.MODEL_TIMEOUT_SECONDS = 1
    with pytest.raises(providers.ProviderError) as caught:
        run(demo, "[demo:fail=timeout] hi")
    assert caught.value.code == "timeout" and caught.value.transient


def test_an_unreachable_provider_is_transient(demo):
    demo.base_url = "http://127.0.0.1:9/v1"
    with pytest.raises(providers.ProviderError) as caught:
        run(demo, "hi")
    assert caught.value.code == "provider_unreachable" and caught.value.transient


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "9999"}, providers.MAX_RETRY_AFTER_SECONDS),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds_or_as_a_date(headers, expected):
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(429, headers=headers, request=request, json={"error": {"message": "slow down"}})
    err = providers.translate_error(openai.RateLimitError("slow down", response=response, body=None))
    assert err.retry_after == expected


def test_a_rejected_key_is_reported_without_the_providers_words():
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(401, request=request, json={"error": {"message": "Incorrect API key sk-123"}})
    err = providers.translate_error(openai.AuthenticationError("bad key", response=response, body=None))
    assert err.code == "provider_auth" and not err.transient and "sk-123" not in err.message


def test_images_become_image_parts_only_for_user_messages():
    url = "data:image/png;base64,AAAA"
    out = providers.to_openai_messages(
        [("user", "What is it?", [{"type": "image", "url": url}]), ("assistant", "A dot.", [])]
    )
    assert out == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}],
        },
        {"role": "assistant", "content": "A dot."},
    ]
