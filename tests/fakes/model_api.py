"""What the model-provider fakes share: a threaded HTTP server that records each request,
answers JSON or server-sent events, and a deterministic way to make a reply.

Each provider's fake (openai_api, anthropic_api, gemini_api, mistral_api) enforces that
provider's documented request schema, says where it is documented, and answers in its
documented shapes, so the real SDKs talk to it as they talk to the provider.

Directives in the last user message steer a reply: `[fake:words=N]` (reply length),
`[fake:reasoning=N]` (reasoning/thinking tokens the model spends).
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DIRECTIVE = re.compile(r"\[fake:(\w+)=(\d+)\]")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any = None
    events: Iterable[tuple[str | None, Any]] | None = None  # (event name, data) for SSE
    headers: dict[str, str] = field(default_factory=dict)


def directives(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in _DIRECTIVE.findall(text)}


def reply_words(model: str, count: int) -> list[str]:
    return [f"{model}:"] + [f"word{i}" for i in range(1, count)]


def text_tokens(text: str) -> int:
    """The fakes' own tokenizer: four characters a token, rounded up."""
    return math.ceil(len(text) / 4)


def png_size(data_url: str) -> tuple[int, int] | None:
    match = re.match(r"^data:image/png;base64,(.*)$", data_url, re.S)
    if not match:
        return None
    head = base64.b64decode("".join(match.group(1).split())[:64])
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


class FakeModelApi:
    """Subclasses implement `route(method, path, headers, body) -> Answer`."""

    name = "fake"

    def __init__(self, *, api_key: str = "test-key", models: Iterable[str] = ()) -> None:
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None

    # --- life ---------------------------------------------------------------

    def start(self) -> FakeModelApi:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def bodies(self, path_suffix: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith(path_suffix)]

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    api: FakeModelApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        self.api.requests.append(Recorded(method, path, headers, body))
        answer = self.api.route(method, path, headers, body)
        if answer.events is None:
            data = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(answer.status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for event, data in answer.events:
            chunk = (
                f"event: {event}\n" if event else ""
            ) + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
