"""A fake of Anthropic's Messages API (docs.anthropic.com/en/api/messages) and its
streaming (docs.anthropic.com/en/docs/build-with-claude/streaming), for the real
`anthropic` SDK.

Enforces, as documented:
- `anthropic-version` header required; the key as `x-api-key` or, as the 2.x SDKs send it,
  `Authorization: Bearer` (401 authentication_error without a good key);
- API version 2026-10-21 (what SDK 2.x sends) refuses temperature, top_p and top_k at any
  value: "temperature: Extra inputs are not permitted" (Anthropic's 2026-10-21 release notes;
  codersera.com's migration guide); on 2023-06-01, temperature and top_p may not both be set;
- `model`, `max_tokens` and `messages` are required; fields outside the schema are refused;
  roles are "user" and "assistant" only (system text is the top-level `system`);
- errors as `{"type": "error", "error": {"type": ..., "message": ...}}`.
Streams the documented event sequence: message_start (usage.input_tokens), content blocks
(a `thinking` block first when the model thinks, then `text`) with their deltas, ping,
message_delta (stop_reason and the cumulative usage.output_tokens, thinking included),
message_stop. Models are listed by GET /v1/models.
Images: about width x height / 750 tokens each.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.model_api import Answer, FakeModelApi, directives, png_size, reply_words, text_tokens

FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
        "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
    }
)  # fmt: skip
SAMPLING = frozenset({"temperature", "top_p", "top_k"})
STOP = {"stop": "end_turn", "length": "max_tokens"}


class FakeAnthropic(FakeModelApi):
    name = "anthropic"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("models", ["claude-sonnet-5-5", "claude-haiku-4-5"])
        super().__init__(**kwargs)
        self.version = ""

    def error(self, status: int, kind: str, message: str) -> Answer:
        return Answer(status, {"type": "error", "error": {"type": kind, "message": message}})

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if key != self.api_key:
            return self.error(401, "authentication_error", "invalid x-api-key")
        self.version = headers.get("anthropic-version", "")
        if not self.version:
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if method == "GET" and path == "/v1/models":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2026-09-01T00:00:00Z"} for m in self.models
            ]
            return Answer(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": self.models[0] if self.models else None,
                    "last_id": self.models[-1] if self.models else None,
                },
            )
        if method == "POST" and path == "/v1/messages":
            return self.messages(body)
        return self.error(404, "not_found_error", f"Unknown path {path}")

    def messages(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            return self.error(400, "invalid_request_error", "request body is not valid JSON")
        allowed = FIELDS - SAMPLING if self.version >= "2026-10-21" else FIELDS
        for name in sorted(set(body) - allowed):
            return self.error(400, "invalid_request_error", f"{name}: Extra inputs are not permitted")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self.error(400, "invalid_request_error", f"{name}: Field required")
        if "temperature" in body and "top_p" in body:
            return self.error(
                400,
                "invalid_request_error",
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
            )
        model = body["model"]
        if model not in self.models:
            return self.error(404, "not_found_error", f"model: {model}")
        messages = body["messages"]
        for i, m in enumerate(messages):
            if m.get("role") not in ("user", "assistant"):
                return self.error(
                    400, "invalid_request_error",
                    f"messages.{i}.role: Input should be 'user' or 'assistant'",
                )  # fmt: skip
        if not messages or messages[0]["role"] != "user":
            return self.error(400, "invalid_request_error", 'messages: first message must use the "user" role')
        if body.get("stream") is not True:
            return self.error(400, "invalid_request_error", "This fake serves streamed messages only.")
        last = messages[-1]
        parts = [{"type": "text", "text": last["content"]}] if isinstance(last["content"], str) else last["content"]
        steer = directives(" ".join(p.get("text", "") for p in parts if p.get("type") == "text"))
        thinking = steer.get("reasoning", 0)
        words = reply_words(model, steer.get("words", 6))
        finish = "stop"
        if len(words) + thinking > body["max_tokens"]:
            words, finish = words[: max(body["max_tokens"] - thinking, 0)], "length"
        return Answer(200, events=self.events(model, self.input_tokens(body), words, thinking, finish))

    def input_tokens(self, body: dict) -> int:
        system = body.get("system") or ""
        total = text_tokens(system if isinstance(system, str) else " ".join(b.get("text", "") for b in system))
        for m in body["messages"]:
            parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            total += 4
            for p in parts:
                if p["type"] == "text":
                    total += text_tokens(p["text"])
                elif p["type"] == "image":
                    src = p["source"]
                    size = (
                        png_size(f"data:{src.get('media_type')};base64,{src['data']}")
                        if src["type"] == "base64"
                        else None
                    )
                    total += -(-size[0] * size[1] // 750) if size else 1_600
        return total

    def events(self, model: str, input_tokens: int, words: list[str], thinking: int, finish: str):
        yield "message_start", {
            "type": "message_start",
            "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": None, "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens, "output_tokens": 1,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                },
            },
        }  # fmt: skip
        index = 0
        if thinking:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            yield (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "Let me think. " * 3},
                },
            )
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
            )
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            index = 1
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        )
        yield "ping", {"type": "ping"}
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": STOP[finish], "stop_sequence": None},
                "usage": {"output_tokens": len(words) + thinking},
            },
        )
        yield "message_stop", {"type": "message_stop"}
