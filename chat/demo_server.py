"""The project's own OpenAI-compatible demo model server (standard library only).

Run it with ``python -m chat.demo_server --host 127.0.0.1 --port 8100``.

Endpoints: ``GET /v1/models``, ``GET /v1/models/demo`` and
``POST /v1/chat/completions`` (non-stream and SSE stream). The reply is
deterministic: built from the last user message and exactly N tokens long,
where a token is one whitespace-separated chunk ("word ") and each streamed
delta carries one token.

Server defaults come from CLI flags or the environment (``DEMO_TTFT_MS``,
``DEMO_TOKENS_PER_SEC``, ``DEMO_REPLY_TOKENS``). Directives in the last user
message override them per request, so end-to-end tests through the whole
product can trigger each behaviour; they are removed from the text before the
reply is built:

    [demo:tokens=N]        reply length (default 20)
    [demo:ttft=MS]         time to first token
    [demo:tps=N]           tokens per second (0 = no delay)
    [demo:echo]            reply with the last user message itself
    [demo:fail=429]        429, Retry-After: 1, rate_limit_error JSON
    [demo:fail=500]        500 with error JSON
    [demo:fail=timeout]    accept the request and never answer
    [demo:fail=cut]        stream [demo:cut_after=N] tokens (default 5), then
                           drop the connection: no finish chunk, usage or [DONE]
    [demo:fail=nousage]    normal reply without usage, even when requested
    [demo:fail=429once:KEY], [demo:fail=500once:KEY]
                           fail the first request carrying KEY, then succeed

An unknown directive or a bad value is a 400, so a typo in a test fails loudly
instead of silently testing the happy path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

MODEL_ID = "demo"
MODEL_CREATED = 1_700_000_000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
DEFAULT_REPLY_TOKENS = 20
DEFAULT_CUT_AFTER = 5
# Below this length the default reply stays plain prose; a code block needs room
# to open and close inside the reply so markdown renderers see a complete fence.
CODE_BLOCK_MIN_TOKENS = 30
# Image parts arrive as data URLs, so bodies can be large.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
# Longer than httpx's 5 s keep-alive expiry, so the client always drops an idle
# connection first and never reuses one the server is closing.
KEEPALIVE_IDLE_SECONDS = 120.0
# Bursts of 1,000+ connects overflow the default backlog of 100, and a dropped
# SYN costs the client a one-second retransmit.
LISTEN_BACKLOG = 4096

REPLY_PREFIX = "Demo reply to: "
SNIPPET_CHARS = 60
LOREM = (
    "This is the Panels demo model, which answers every message with the same "
    "text so that tests and benchmarks can predict it. Lorem ipsum dolor sit "
    "amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)
CODE_BLOCK_TOKENS = ("```python\n", 'print("demo")\n', "```")

_TOKEN_RE = re.compile(r"\s*\S+\s*")
_DIRECTIVE_RE = re.compile(r"\[demo:([A-Za-z_]+)(?:=([^\]]*))?\]")
_FAIL_MODES = frozenset({"429", "500", "timeout", "cut", "nousage"})
_FAIL_ONCE_MODES = frozenset({"429once", "500once"})


# --------------------------------------------------------------------------
# Configuration and directives


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    ttft_ms: float = 0.0
    tokens_per_sec: float = 0.0
    reply_tokens: int = DEFAULT_REPLY_TOKENS
    quiet: bool = False


@dataclasses.dataclass(slots=True)
class Directives:
    tokens: int | None = None
    ttft_ms: float | None = None
    tps: float | None = None
    echo: bool = False
    fail: str | None = None
    fail_key: str | None = None
    cut_after: int = DEFAULT_CUT_AFTER


class ApiError(Exception):
    """An error answered as OpenAI-style JSON with the given status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = tuple(headers)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _directive_error(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_demo_directive")


def _non_negative_int(name: str, raw: str | None) -> int:
    try:
        value = int(raw or "")
    except ValueError:
        raise _directive_error(f"[demo:{name}=N] needs an integer, got {raw!r}") from None
    if value < 0:
        raise _directive_error(f"[demo:{name}=N] must not be negative, got {value}")
    return value


def _non_negative_float(name: str, raw: str | None) -> float:
    try:
        value = float(raw or "")
    except ValueError:
        raise _directive_error(f"[demo:{name}=N] needs a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _directive_error(f"[demo:{name}=N] must be a finite number >= 0")
    return value


def parse_directives(text: str) -> tuple[Directives, str]:
    """Return the directives in ``text`` and the text without them."""
    directives = Directives()
    for match in _DIRECTIVE_RE.finditer(text):
        name = match.group(1).lower()
        raw = match.group(2)
        value = raw.strip() if raw is not None else None
        if name == "tokens":
            directives.tokens = _non_negative_int(name, value)
        elif name == "ttft":
            directives.ttft_ms = _non_negative_float(name, value)
        elif name == "tps":
            directives.tps = _non_negative_float(name, value)
        elif name == "cut_after":
            directives.cut_after = _non_negative_int(name, value)
        elif name == "echo":
            if value is not None:
                raise _directive_error("[demo:echo] takes no value")
            directives.echo = True
        elif name == "fail":
            mode, _, key = (value or "").partition(":")
            if mode in _FAIL_MODES and not key:
                directives.fail, directives.fail_key = mode, None
            elif mode in _FAIL_ONCE_MODES and key:
                directives.fail, directives.fail_key = mode, key
            else:
                raise _directive_error(
                    f"[demo:fail=...] got {value!r}; expected one of 429, 500, "
                    "timeout, cut, nousage, 429once:KEY, 500once:KEY"
                )
        else:
            raise _directive_error(f"unknown directive [demo:{name}]")
    return directives, _DIRECTIVE_RE.sub("", text).strip()


# --------------------------------------------------------------------------
# The reply


def tokenize(text: str) -> list[str]:
    """Split text into the server's tokens; joining them gives the text back."""
    return _TOKEN_RE.findall(text)


def build_reply_tokens(prompt: str, n_tokens: int) -> list[str]:
    """The default reply to ``prompt`` (directives already removed), N tokens long."""
    if n_tokens <= 0:
        return []
    snippet = " ".join(prompt.split())[:SNIPPET_CHARS].strip() or "(empty message)"
    tokens = tokenize(f"{REPLY_PREFIX}{snippet}. ")
    with_code = n_tokens >= CODE_BLOCK_MIN_TOKENS
    prose_len = n_tokens - len(CODE_BLOCK_TOKENS) if with_code else n_tokens
    lorem = tokenize(LOREM + " ")
    while len(tokens) < prose_len:
        tokens.extend(lorem[: prose_len - len(tokens)])
    tokens = tokens[:prose_len]
    if with_code:
        tokens[-1] = tokens[-1].rstrip() + "\n\n"
        tokens.extend(CODE_BLOCK_TOKENS)
    else:
        tokens[-1] = tokens[-1].rstrip()
    return tokens


def _content_texts(content: Any, index: int) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise ApiError(
            400,
            "message content must be a string or a list of parts",
            param=f"messages[{index}].content",
        )
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(
                400,
                "each content part must be an object with a type",
                param=f"messages[{index}].content",
            )
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(
                    400,
                    "a text part needs a string 'text'",
                    param=f"messages[{index}].content",
                )
            texts.append(text)
    return texts


def estimate_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """ceil(characters of all message text / 4) + 4 per message."""
    chars = 0
    count = 0
    for index, message in enumerate(messages):
        count += 1
        chars += sum(len(t) for t in _content_texts(message.get("content"), index))
    return math.ceil(chars / 4) + 4 * count


@dataclasses.dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    last_user_text: str


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    last_user_text = ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, "each message needs a string 'role'", param=f"messages[{index}]")
        texts = _content_texts(message.get("content"), index)
        if message["role"] == "user":
            last_user_text = "\n".join(texts)
    stream = data.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    max_tokens = data.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = data.get("max_tokens"), "max_tokens"
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ApiError(400, f"'{param}' must be a positive integer", param=param)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        max_tokens=max_tokens,
        last_user_text=last_user_text,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    ttft: float
    interval: float
    cut_after: int | None
    report_usage: bool

    @property
    def usage(self) -> dict[str, int]:
        completion = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def _plan(config: DemoConfig, chat: ChatRequest, directives: Directives, prompt: str) -> _Plan:
    if directives.echo:
        full = tokenize(prompt)
        if directives.tokens is not None:
            full = full[: directives.tokens]
    else:
        n = directives.tokens if directives.tokens is not None else config.reply_tokens
        full = build_reply_tokens(prompt, n)
    finish_reason = "stop"
    if chat.max_tokens is not None and len(full) > chat.max_tokens:
        full, finish_reason = full[: chat.max_tokens], "length"
    ttft_ms = directives.ttft_ms if directives.ttft_ms is not None else config.ttft_ms
    tps = directives.tps if directives.tps is not None else config.tokens_per_sec
    return _Plan(
        tokens=full,
        finish_reason=finish_reason,
        prompt_tokens=estimate_prompt_tokens(chat.messages),
        ttft=ttft_ms / 1000,
        interval=1 / tps if tps > 0 else 0.0,
        cut_after=directives.cut_after if directives.fail == "cut" else None,
        report_usage=directives.fail != "nousage",
    )


# --------------------------------------------------------------------------
# HTTP


@dataclasses.dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclasses.dataclass(slots=True)
class _Exchange:
    """What one request turned into, for the log line."""

    method: str = "-"
    target: str = "-"
    status: int | None = None


def _response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Server: panels-demo")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ApiError(400, "bad chunk size in a chunked body") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise ApiError(413, "request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
    """Read one request; None when the client closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise ApiError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise ApiError(431, "request head too large") from None
    lines = head.decode("latin-1").strip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ApiError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ApiError(400, "malformed header line")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if headers.get("expect", "").lower() == "100-continue":
        # curl sends this for bodies over 1 KB and otherwise waits a second.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "transfer-encoding" in headers:
        if headers["transfer-encoding"].lower() != "chunked":
            raise ApiError(501, "only chunked transfer encoding is supported")
        body = await _read_chunked_body(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length < 0:
            raise ApiError(400, "bad Content-Length")
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "request body too large")
        body = await reader.readexactly(length)
    else:
        body = b""
    return _Request(method, target, version, headers, body)


async def _send_json(
    writer: asyncio.StreamWriter,
    exchange: _Exchange,
    status: int,
    payload: Any,
    *,
    keep_alive: bool,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = _response_head(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep_alive else "close"),
            *headers,
        ],
    )
    exchange.status = status
    writer.write(head + body)
    await writer.drain()


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _wait_for_disconnect(reader: asyncio.StreamReader) -> None:
    # Reading to EOF frees the coroutine as soon as the client gives up, so a
    # "timeout" request costs nothing once its client is gone.
    while await reader.read(65536):
        pass


def _model_object() -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "panels",
    }


class DemoServer:
    """The asyncio server; one coroutine per connection, keep-alive supported."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        config: DemoConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config or DemoConfig()
        self.connections_opened = 0
        self.requests_handled = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        # One process serves the demo model, so "once" state may live in memory.
        self._failed_once: set[tuple[str, str]] = set()

    @property
    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle_connection,
            self.host,
            self.port,
            limit=MAX_HEAD_BYTES,
            backlog=LISTEN_BACKLOG,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Python 3.11's wait_closed() does not wait for open connections, and a
        # "timeout" request would otherwise hold its coroutine forever.
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        try:
            while True:
                exchange = _Exchange()
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(KEEPALIVE_IDLE_SECONDS):
                        request = await _read_request(reader, writer)
                except ApiError as exc:
                    await _send_json(writer, exchange, exc.status, exc.body(), keep_alive=False)
                    self._log(exchange, started)
                    return
                if request is None:
                    return
                exchange.method, exchange.target = request.method, request.target
                try:
                    keep_alive = await self._respond(request, reader, writer, exchange)
                finally:
                    self.requests_handled += 1
                    self._log(exchange, started)
                if not keep_alive:
                    return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only `close()` cancels a connection. Ended by it, the task finishes rather than
            # staying cancelled: Python 3.11's asyncio.start_server calls exception() on a
            # connection's task when it is done, which raises for a cancelled one, and the
            # loop logs a CancelledError traceback per open connection at every shutdown.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _log(self, exchange: _Exchange, started: float) -> None:
        if self.config.quiet:
            return
        status = exchange.status if exchange.status is not None else "-"
        elapsed_ms = (time.perf_counter() - started) * 1000
        sys.stderr.write(f"demo_server: {exchange.method} {exchange.target} {status} {elapsed_ms:.1f}ms\n")

    async def _respond(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> bool:
        """Answer one request; returns whether the connection may be reused."""
        keep_alive = request.keep_alive
        routes: dict[str, str] = {
            "/v1/models": "GET",
            f"/v1/models/{MODEL_ID}": "GET",
            "/v1/chat/completions": "POST",
        }
        allowed = routes.get(request.path)
        try:
            if allowed is None:
                raise ApiError(404, f"no route for {request.path}", code="not_found")
            if request.method != allowed:
                raise ApiError(
                    405,
                    f"{request.method} is not allowed here",
                    headers=[("Allow", allowed)],
                )
            if request.path == "/v1/models":
                payload = {"object": "list", "data": [_model_object()]}
                await _send_json(writer, exchange, 200, payload, keep_alive=keep_alive)
                return keep_alive
            if request.path.startswith("/v1/models/"):
                await _send_json(writer, exchange, 200, _model_object(), keep_alive=keep_alive)
                return keep_alive
            return await self._chat(request, reader, writer, exchange)
        except ApiError as exc:
            await _send_json(
                writer,
                exchange,
                exc.status,
                exc.body(),
                keep_alive=keep_alive,
                headers=exc.headers,
            )
            return keep_alive

    def _injected_failure(self, directives: Directives) -> str | None:
        fail = directives.fail
        if fail in _FAIL_ONCE_MODES:
            assert directives.fail_key is not None
            key = (fail, directives.fail_key)
            if key in self._failed_once:
                return None
            self._failed_once.add(key)
            return fail.removesuffix("once")
        return fail

    async def _chat(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> bool:
        chat = parse_chat_request(request.body)
        directives, prompt = parse_directives(chat.last_user_text)
        fail = self._injected_failure(directives)
        if fail == "429":
            raise ApiError(
                429,
                "Rate limit reached for the demo model (injected by [demo:fail]).",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                headers=[("Retry-After", "1")],
            )
        if fail == "500":
            raise ApiError(
                500,
                "The demo model had an error (injected by [demo:fail]).",
                type_="server_error",
                code="server_error",
            )
        if fail == "timeout":
            await _wait_for_disconnect(reader)
            return False
        plan = _plan(self.config, chat, directives, prompt)
        completion_id = f"chatcmpl-demo{secrets.token_hex(12)}"
        if chat.stream:
            return await self._stream(request, writer, exchange, chat, plan, completion_id)
        return await self._complete(request, writer, exchange, chat, plan, completion_id)

    async def _complete(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        chat: ChatRequest,
        plan: _Plan,
        completion_id: str,
    ) -> bool:
        loop = asyncio.get_running_loop()
        pause = plan.ttft + max(len(plan.tokens) - 1, 0) * plan.interval
        await _sleep_until(loop, loop.time() + pause)
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(plan.tokens),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                }
            ],
        }
        if plan.report_usage:
            payload["usage"] = plan.usage
        headers = [("x-request-id", completion_id)]
        if plan.cut_after is None:
            await _send_json(
                writer,
                exchange,
                200,
                payload,
                keep_alive=request.keep_alive,
                headers=headers,
            )
            return request.keep_alive
        # A cut non-stream reply promises the whole body, then delivers half.
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = _response_head(
            200,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *headers,
            ],
        )
        exchange.status = 200
        writer.write(head + body[: len(body) // 2])
        await writer.drain()
        writer.transport.abort()
        return False

    async def _stream(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        chat: ChatRequest,
        plan: _Plan,
        completion_id: str,
    ) -> bool:
        # HTTP/1.0 has no chunked encoding; such a stream ends by closing.
        chunked = request.version != "HTTP/1.0"
        keep_alive = request.keep_alive and chunked
        headers = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            ("Connection", "keep-alive" if keep_alive else "close"),
            ("x-request-id", completion_id),
        ]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        writer.write(_response_head(200, headers))
        exchange.status = 200
        await writer.drain()

        base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": chat.model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            payload = {**base, "choices": [choice]}
            if chat.include_usage:
                payload["usage"] = None
            return json.dumps(payload, separators=(",", ":")).encode()

        # Per-chunk cost shows up in the benchmarks, so each token chunk is the
        # same pre-encoded envelope around the JSON-encoded token.
        sentinel = "@@demo-token@@"
        envelope = chunk({"content": sentinel}, None)
        token_head, token_tail = envelope.split(json.dumps(sentinel).encode())

        def frame(data: bytes) -> bytes:
            event = b"data: " + data + b"\n\n"
            if chunked:
                return b"%x\r\n%b\r\n" % (len(event), event)
            return event

        loop = asyncio.get_running_loop()
        first_at = loop.time() + plan.ttft
        await _sleep_until(loop, first_at)
        writer.write(frame(chunk({"role": "assistant", "content": ""}, None)))
        for index, token in enumerate(plan.tokens):
            if plan.cut_after is not None and index >= plan.cut_after:
                break
            if index and plan.interval:
                await _sleep_until(loop, first_at + index * plan.interval)
            writer.write(frame(token_head + json.dumps(token).encode() + token_tail))
            await writer.drain()
        if plan.cut_after is not None:
            await writer.drain()
            writer.transport.abort()
            return False
        tail = [frame(chunk({}, plan.finish_reason))]
        if chat.include_usage and plan.report_usage:
            usage_chunk = {**base, "choices": [], "usage": plan.usage}
            tail.append(frame(json.dumps(usage_chunk, separators=(",", ":")).encode()))
        tail.append(frame(b"[DONE]"))
        if chunked:
            tail.append(b"0\r\n\r\n")
        writer.write(b"".join(tail))
        await writer.drain()
        return keep_alive


# --------------------------------------------------------------------------
# Running it


class DemoServerThread:
    """A DemoServer on its own event loop in a daemon thread (for tests)."""

    def __init__(self, server: DemoServer) -> None:
        self.server = server
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"demo-server-{server.port}", daemon=True)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the demo server did not start in time")
        if self._error is not None:
            raise self._error
        if not self.server.is_serving:
            raise RuntimeError("the demo server failed to start")

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.server.start()
        except OSError as exc:
            self._error = exc
            return
        finally:
            # Any other failure is a bug: it reaches threading's excepthook, and
            # start() still returns instead of waiting out its timeout.
            self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self.server.close()


def serve_in_thread(
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    ttft_ms: float = 0.0,
    tokens_per_sec: float = 0.0,
    reply_tokens: int = DEFAULT_REPLY_TOKENS,
    quiet: bool = True,
) -> DemoServerThread:
    """Start a demo server in a background thread; port 0 picks a free port.

    Defaults ignore the DEMO_* environment so tests see the same server
    wherever they run; use the handle's ``.port`` and ``.stop()``.
    """
    config = DemoConfig(
        ttft_ms=ttft_ms,
        tokens_per_sec=tokens_per_sec,
        reply_tokens=reply_tokens,
        quiet=quiet,
    )
    handle = DemoServerThread(DemoServer(host, port, config))
    handle.start()
    return handle


def _env_number(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str],
    name: str,
    kind: type[int | float],
    default: float,
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        parser.error(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
    if not math.isfinite(value) or value < 0:
        parser.error(f"{name} must be >= 0, got {raw!r}")
    return value


def _flag_number(kind: type[int | float]) -> Any:
    def convert(raw: str) -> float:
        value = kind(raw)
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {raw!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, int, DemoConfig]:
    """Host, port and config from flags; env vars supply the flags' defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m chat.demo_server",
        description="Panels' OpenAI-compatible demo model server.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--ttft-ms",
        type=_flag_number(float),
        default=_env_number(parser, environ, "DEMO_TTFT_MS", float, 0.0),
        help="time to first token in ms (env DEMO_TTFT_MS; default 0)",
    )
    parser.add_argument(
        "--tokens-per-sec",
        type=_flag_number(float),
        default=_env_number(parser, environ, "DEMO_TOKENS_PER_SEC", float, 0.0),
        help="streaming rate, 0 = no delay (env DEMO_TOKENS_PER_SEC; default 0)",
    )
    parser.add_argument(
        "--reply-tokens",
        type=_flag_number(int),
        default=_env_number(parser, environ, "DEMO_REPLY_TOKENS", int, DEFAULT_REPLY_TOKENS),
        help=f"reply length (env DEMO_REPLY_TOKENS; default {DEFAULT_REPLY_TOKENS})",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")
    args = parser.parse_args(argv)
    config = DemoConfig(
        ttft_ms=float(args.ttft_ms),
        tokens_per_sec=float(args.tokens_per_sec),
        reply_tokens=int(args.reply_tokens),
        quiet=args.quiet,
    )
    return args.host, args.port, config


def _raise_open_file_limit() -> None:
    # Each connection is a file descriptor; the common soft limit of 1,024
    # would cap the server below the 1,000+ streams it exists to hold.
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _serve_until_signalled(server: DemoServer) -> None:
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    if not server.config.quiet:
        sys.stderr.write(f"demo_server: serving model {MODEL_ID!r} on http://{server.host}:{server.port}/v1\n")
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    host, port, config = parse_args(argv)
    _raise_open_file_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(DemoServer(host, port, config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
