"""openai_api/upstream.py reads an OpenAI-shaped stream's server-sent events from the SDK's
unread response (chat/providers/sse.py): the
events of one read come out together, line ends and events split across reads are
joined as the SSE format allows (https://html.spec.whatwg.org/multipage/server-sent-events.html,
"Interpreting an event stream"), an `error` event is a failure as the openai SDK raises
it, a refusal keeps its status, and a finished stream gives its connection back."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chat.models import ModelSpec
from chat.providers import ProviderError
from openai_api import upstream
from openai_api.request import CompletionRequest, Turn
from tests.e2e_servers import demo_server  # noqa: F401


def _chunk(text: str = "", finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    return json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": choices, "usage": usage}).encode()


class RawServer:
    """Answers each request with a status line and then `parts` as written, each after a pause
    (so each reaches the client in a read of its own), on one HTTP/1.1 chunked response."""

    def __init__(self, parts: list[bytes], status: str = "200 OK") -> None:
        self.parts, self.status = parts, status
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            kind = b"text/event-stream" if self.status.startswith("200") else b"application/json"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head % (self.status.encode(), kind))
            for part in self.parts:
                conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                time.sleep(0.05)
            conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator:
    servers: list[RawServer] = []

    def start(parts: list[bytes], status: str = "200 OK") -> RawServer:
        servers.append(RawServer(parts, status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _spec(port: int) -> ModelSpec:
    return ModelSpec(
        slug="m", name="M", upstream_id="m", api=ModelSpec.Api.OPENAI_COMPATIBLE, base_url=f"http://127.0.0.1:{port}/v1"
    )


REQUEST = CompletionRequest(model="m", turns=[Turn(role="user", text="hi", images=0, content="hi")], stream=True)


async def _read(spec: ModelSpec) -> list[list[upstream.Piece]]:
    stream = await upstream.open_stream(spec=spec, request=REQUEST, max_tokens=10)
    try:
        return [batch async for batch in stream.batches()]
    finally:
        await stream.close()


def test_events_of_one_read_come_together_and_split_lines_are_joined(raw_server):
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    server = raw_server(
        [
            b"data: " + _chunk("a") + b"\n\ndata: " + _chunk("b") + b"\n\n",  # two events, one read
            b"data: " + _chunk("c")[:10],  # an event split across reads, with CRLF line ends
            _chunk("c")[10:] + b"\r",
            b"\n\r\n: a comment\r\nevent: ignored\r\ndata: " + _chunk("", "stop") + b"\r\n\r\n",
            b"data: " + _chunk(usage=usage) + b"\n\ndata: [DONE]\n\n",
        ]
    )
    batches = asyncio.run(_read(_spec(server.port)))
    # "c" ends only with the blank line that the fourth read completes, with the finish.
    assert [[p.text for p in batch] for batch in batches] == [["a", "b"], ["c", ""], [""]]
    assert batches[1][1].finish_reason == "stop"
    assert batches[2][0].usage == upstream.Usage(3, 4)


def test_an_error_event_mid_stream_is_a_provider_error(raw_server):
    error = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
    server = raw_server([b"data: " + _chunk("a") + b"\n\n", b"data: " + error + b"\n\n"])

    async def run() -> list[str]:
        stream = await upstream.open_stream(spec=_spec(server.port), request=REQUEST, max_tokens=10)
        texts = []
        try:
            async for piece in stream:
                texts.append(piece.text)
        finally:
            await stream.close()
        return texts

    with pytest.raises(ProviderError) as caught:
        asyncio.run(run())
    assert caught.value.code == "provider_error" and "overloaded" in caught.value.message


def test_a_refusal_keeps_its_status_and_message(raw_server):
    body = json.dumps({"error": {"message": "'stop' is too long", "type": "invalid_request_error"}}).encode()
    server = raw_server([body], status="400 Bad Request")
    with pytest.raises(ProviderError) as caught:
        asyncio.run(_read(_spec(server.port)))
    assert caught.value.code == "provider_rejected" and caught.value.status == 400
    assert caught.value.message.endswith("(HTTP 400): 'stop' is too long")


def test_finished_streams_give_their_connection_back(demo_server):  # noqa: F811
    spec = ModelSpec(
        slug="demo", name="Demo", upstream_id="demo", api=ModelSpec.Api.OPENAI_COMPATIBLE,
        base_url=f"http://127.0.0.1:{demo_server.port}/v1",
    )  # fmt: skip
    request = CompletionRequest(
        model="demo", turns=[Turn(role="user", text="[demo:tokens=5] hi", images=0, content="[demo:tokens=5] hi")]
    )

    async def run() -> list:
        for _ in range(3):
            stream = await upstream.open_stream(spec=spec, request=request, max_tokens=10)
            assert "".join([p.text async for p in stream])
            await stream.close()
        client = upstream._client(spec.base_url, spec.api_key)._client  # the SDK's httpx client
        return list(client._transport._pool.connections)

    connections = asyncio.run(run())
    assert len(connections) == 1 and "Request Count: 3" in repr(connections[0])
