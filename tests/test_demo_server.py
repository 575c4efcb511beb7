"""The demo model server, driven by the real openai SDK over HTTP.

No Django here: the server is standard library only and these tests must run
whatever DJANGO_SETTINGS_MODULE says.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from chat.demo_server import DemoConfig, DemoServer, DemoServerThread, parse_args, serve_in_thread, tokenize

CODE_BLOCK = '```python\nprint("demo")\n```'


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServerThread]:
    handle = serve_in_thread()
    yield handle
    handle.stop()


def make_client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)


@pytest.fixture
def client(server: DemoServerThread) -> Iterator[openai.OpenAI]:
    c = make_client(server.port)
    yield c
    c.close()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def complete(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="demo", messages=user(text), **kwargs)


def stream(client: openai.OpenAI, text: str, *, include_usage: bool = True, **kwargs: Any) -> list[ChatCompletionChunk]:
    chunks = client.chat.completions.create(
        model="demo",
        messages=user(text),
        stream=True,
        stream_options={"include_usage": include_usage},
        **kwargs,
    )
    return list(chunks)


def deltas(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def test_models_lists_demo(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo"]


def test_non_stream_reply_and_usage(client: openai.OpenAI) -> None:
    reply = complete(client, "Hello there")

    content = reply.choices[0].message.content
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert content.startswith("Demo reply to: Hello there. ")
    assert len(tokenize(content)) == 20
    assert CODE_BLOCK not in content
    assert reply.usage.prompt_tokens == math.ceil(len("Hello there") / 4) + 4
    assert reply.usage.completion_tokens == 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 20
    assert complete(client, "Hello there").choices[0].message.content == content


def test_prompt_estimate_counts_text_parts_of_every_message(
    client: openai.OpenAI,
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                },
            ],
        },
    ]
    reply = client.chat.completions.create(model="demo", messages=messages)

    chars = len("Be brief.") + len("What is in this picture?")
    assert reply.usage.prompt_tokens == math.ceil(chars / 4) + 2 * 4
    assert reply.choices[0].message.content.startswith("Demo reply to: What is in this picture?. ")


def test_stream_concatenates_to_the_non_stream_text(client: openai.OpenAI) -> None:
    expected = complete(client, "Tell me a story")

    chunks = stream(client, "Tell me a story")

    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert len(deltas(chunks)) == 20
    assert "".join(deltas(chunks)) == expected.choices[0].message.content
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == expected.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(
    client: openai.OpenAI,
) -> None:
    chunks = stream(client, "Hi", include_usage=False)

    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert finish_reasons(chunks) == ["stop"]


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_caps_the_reply_with_finish_reason_length(client: openai.OpenAI, param: str) -> None:
    full = complete(client, "Cap me").choices[0].message.content

    capped = complete(client, "Cap me", **{param: 5})
    chunks = stream(client, "Cap me", **{param: 5})

    text = capped.choices[0].message.content
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens == 5
    assert len(tokenize(text)) == 5
    assert full.startswith(text)
    assert "".join(deltas(chunks)) == text
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].usage.completion_tokens == 5


def test_max_tokens_equal_to_the_reply_is_a_normal_stop(
    client: openai.OpenAI,
) -> None:
    reply = complete(client, "Exact", max_tokens=20)

    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 20


def test_tokens_directive_sets_length_and_long_replies_close_a_code_block(
    client: openai.OpenAI,
) -> None:
    reply = complete(client, "Long please [demo:tokens=40]")
    short = complete(client, "Short please [demo:tokens=3]")

    content = reply.choices[0].message.content
    assert content.startswith("Demo reply to: Long please. ")
    assert "[demo:" not in content
    assert len(tokenize(content)) == 40
    assert content.endswith("\n\n" + CODE_BLOCK)
    assert reply.usage.completion_tokens == 40
    assert short.choices[0].message.content == "Demo reply to:"
    assert short.usage.completion_tokens == 3


def test_echo_returns_the_user_text_verbatim(client: openai.OpenAI) -> None:
    text = "<script>alert(1)</script>\n\n**bold** and `code`"

    reply = complete(client, f"[demo:echo] {text}")
    chunks = stream(client, f"[demo:echo] {text}")

    assert reply.choices[0].message.content == text
    assert "".join(deltas(chunks)) == text
    assert reply.usage.completion_tokens == len(deltas(chunks)) == 4


def test_injected_429_is_a_rate_limit_error_with_retry_after(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        complete(client, "[demo:fail=429]")

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"


def test_injected_500_is_an_internal_server_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stream(client, "[demo:fail=500]")

    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


def test_timeout_hangs_only_its_own_connection(server: DemoServerThread) -> None:
    hung_client = make_client(server.port).with_options(timeout=0.5)
    outcome: list[openai.APIError] = []

    def hang() -> None:
        try:
            complete(hung_client, "[demo:fail=timeout]")
        except openai.APIError as exc:
            outcome.append(exc)

    hung = threading.Thread(target=hang)
    hung.start()
    time.sleep(0.1)
    with make_client(server.port) as other:
        reply = complete(other, "Still there?")
    still_hanging = hung.is_alive()
    hung.join(5)

    assert reply.choices[0].message.content.startswith("Demo reply to: Still there?")
    assert still_hanging
    assert len(outcome) == 1
    assert isinstance(outcome[0], openai.APITimeoutError)


def test_cut_stream_raises_after_fewer_tokens_without_finish_or_usage(
    client: openai.OpenAI,
) -> None:
    received: list[ChatCompletionChunk] = []
    chunks = client.chat.completions.create(
        model="demo",
        messages=user("[demo:fail=cut] [demo:cut_after=3]"),
        stream=True,
        stream_options={"include_usage": True},
    )

    # The server drops the connection mid-body; httpx reports an incomplete
    # chunked read, which the SDK raises as a connection error.
    with pytest.raises(openai.APIConnectionError):
        for chunk in chunks:
            received.append(chunk)  # list() would lose what arrived before the error

    assert deltas(received) == ["Demo ", "reply ", "to: "]
    assert finish_reasons(received) == []
    assert all(c.usage is None for c in received)


def test_cut_defaults_to_five_tokens_and_cuts_non_stream_bodies(
    client: openai.OpenAI,
) -> None:
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="demo", messages=user("[demo:fail=cut]"), stream=True):
            received.append(chunk)  # list() would lose what arrived before the error
    with pytest.raises(openai.APIConnectionError):
        complete(client, "[demo:fail=cut]")

    assert len(deltas(received)) == 5


def test_nousage_streams_normally_without_usage(client: openai.OpenAI) -> None:
    chunks = stream(client, "[demo:fail=nousage]")
    reply = complete(client, "[demo:fail=nousage]")

    assert len(deltas(chunks)) == 20
    assert finish_reasons(chunks) == ["stop"]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert reply.usage is None


@pytest.mark.parametrize(
    ("mode", "error"),
    [("429once", openai.RateLimitError), ("500once", openai.InternalServerError)],
)
def test_fail_once_fails_the_first_request_with_its_key_only(
    client: openai.OpenAI, mode: str, error: type[openai.APIStatusError]
) -> None:
    key = uuid.uuid4().hex
    text = f"Retry me [demo:fail={mode}:{key}]"

    with pytest.raises(error):
        complete(client, text)
    second = complete(client, text)
    third = stream(client, text)

    assert second.choices[0].message.content.startswith("Demo reply to: Retry me.")
    assert second.usage.completion_tokens == 20
    assert len(deltas(third)) == 20
    with pytest.raises(error):
        complete(client, f"Other key [demo:fail={mode}:{uuid.uuid4().hex}]")


def test_ttft_delays_the_first_token(client: openai.OpenAI) -> None:
    started = time.monotonic()
    chunks = client.chat.completions.create(
        model="demo", messages=user("Wait [demo:ttft=300] [demo:tokens=3]"), stream=True
    )
    first_token_after = None
    for chunk in chunks:
        if first_token_after is None and chunk.choices and chunk.choices[0].delta.content:
            first_token_after = time.monotonic() - started

    non_stream_started = time.monotonic()
    complete(client, "Wait [demo:ttft=200] [demo:tokens=3]")
    non_stream_took = time.monotonic() - non_stream_started

    assert first_token_after is not None
    assert first_token_after >= 0.3
    assert non_stream_took >= 0.2


def test_tps_spaces_the_tokens(client: openai.OpenAI) -> None:
    started = time.monotonic()
    chunks = stream(client, "Slowly [demo:tps=20] [demo:tokens=5]")
    took = time.monotonic() - started

    assert len(deltas(chunks)) == 5
    # Four gaps of 1/20 s between five tokens.
    assert took >= 4 / 20


def test_server_defaults_apply_and_directives_override_them() -> None:
    with (
        serve_in_thread(reply_tokens=7, ttft_ms=100) as handle,
        make_client(handle.port) as c,
    ):
        started = time.monotonic()
        default = complete(c, "Defaults")
        took = time.monotonic() - started
        overridden = complete(c, "Override [demo:tokens=2] [demo:ttft=0]")

    assert default.usage.completion_tokens == 7
    assert took >= 0.1
    assert overridden.choices[0].message.content == "Demo reply"


def test_bad_directive_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        complete(client, "[demo:tokenz=5]")
    with pytest.raises(openai.BadRequestError) as bad_value:
        complete(client, "[demo:fail=418]")

    assert unknown.value.code == "invalid_demo_directive"
    assert bad_value.value.code == "invalid_demo_directive"


def test_keep_alive_reuses_one_connection(server: DemoServerThread) -> None:
    before = server.server.connections_opened
    with make_client(server.port) as c:
        complete(c, "One")
        complete(c, "Two", max_tokens=2)
        c.models.list()
    sdk_connections = server.server.connections_opened - before

    # The sync SDK closes a stream's response at [DONE] without reading the
    # chunked terminator, which costs it the connection; a client that reads the
    # whole body keeps it.
    body = json.dumps({"model": "demo", "stream": True, "messages": user("Hi")})
    before = server.server.connections_opened
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        bodies = []
        for _ in range(3):
            conn.request("POST", "/v1/chat/completions", body=body)
            response = conn.getresponse()
            assert response.getheader("Transfer-Encoding") == "chunked"
            bodies.append(response.read())
    finally:
        conn.close()
    raw_connections = server.server.connections_opened - before

    assert sdk_connections == 1
    assert raw_connections == 1
    assert all(b.endswith(b"data: [DONE]\n\n") for b in bodies)


def test_http_1_0_stream_ends_by_closing_the_connection(
    server: DemoServerThread,
) -> None:
    body = b'{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.0\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data

    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding" not in head.lower()
    assert payload.count(b"data: {") == 22
    assert payload.endswith(b"data: [DONE]\n\n")


def test_unknown_path_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.get("/nowhere", cast_to=object)


def test_200_concurrent_streams_all_complete(server: DemoServerThread) -> None:
    n = 200
    # Every stream waits here after its first token: if the server served them
    # one at a time, the barrier could never fill and would break.
    barrier = threading.Barrier(n, timeout=5)

    def one(c: openai.OpenAI, i: int) -> tuple[str, int]:
        chunks = c.chat.completions.create(
            model="demo",
            messages=user(f"Stream {i}"),
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        usage = 0
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                if not text:
                    barrier.wait()
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        return text, usage

    with make_client(server.port) as c, ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: one(c, i), range(n)))

    for i, (text, usage) in enumerate(results):
        assert text.startswith(f"Demo reply to: Stream {i}. ")
        assert usage == 20


def test_settings_come_from_flags_over_environment() -> None:
    environ = {
        "DEMO_TTFT_MS": "15",
        "DEMO_TOKENS_PER_SEC": "40",
        "DEMO_REPLY_TOKENS": "9",
    }

    host, port, from_env = parse_args([], environ)
    _, _, from_flags = parse_args(["--port", "9000", "--reply-tokens", "3", "--quiet"], environ)
    _, port_from_flag, _ = parse_args(["--port", "9000"], {})

    assert (host, port) == ("127.0.0.1", 8100)
    assert port_from_flag == 9000
    assert (from_env.ttft_ms, from_env.tokens_per_sec, from_env.reply_tokens) == (
        15.0,
        40.0,
        9,
    )
    assert from_env.quiet is False
    assert from_flags.reply_tokens == 3
    assert from_flags.ttft_ms == 15.0
    assert from_flags.quiet is True
    with pytest.raises(SystemExit):
        parse_args([], {"DEMO_REPLY_TOKENS": "many"})


def test_closing_with_idle_keep_alive_connections_logs_nothing() -> None:
    # The benchmark stops the server with clients' idle keep-alive connections still open;
    # each used to leave a CancelledError traceback in the log (Python 3.11's start_server).
    async def run() -> list[dict]:
        logged: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context))
        demo = DemoServer("127.0.0.1", 0, DemoConfig(quiet=True))
        await demo.start()
        connections = [await asyncio.open_connection("127.0.0.1", demo.port) for _ in range(3)]
        await asyncio.sleep(0.05)  # each connection's task is waiting for a request
        await demo.close()
        await asyncio.sleep(0.05)
        for _, writer in connections:
            writer.close()
        return logged

    assert asyncio.run(run()) == []
