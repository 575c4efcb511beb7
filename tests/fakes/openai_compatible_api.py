"""The chat-completions protocol shared by the OpenAI, Gemini and Mistral fakes: request
checks common to all three, the streamed chunk shapes of OpenAI's API reference
(platform.openai.com/docs/api-reference/chat/create and .../chat-streaming), and the
model list (GET /models). Each provider's fake says what its API adds or refuses.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.model_api import Answer, FakeModelApi, directives, png_size, reply_words, text_tokens


class FakeChatCompletions(FakeModelApi):
    prefix = "/v1"
    # Fields the provider's request schema defines; anything else is the provider's to refuse.
    allowed_fields: frozenset[str] = frozenset()
    usage_always = False  # usage in the last chunk without stream_options
    image_base, image_per_tile = 85, 170

    # --- provider-specific hooks --------------------------------------------------

    def refuse(self, body: dict) -> Answer | None:
        return None

    def error(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> Answer:
        return Answer(
            status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        )

    def usage(self, *, prompt: int, completion: int, reasoning: int) -> dict:
        """OpenAI: completion_tokens includes reasoning tokens, broken down in completion_tokens_details."""
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,
            "total_tokens": prompt + completion + reasoning,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def model_entry(self, model: str) -> dict:
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}

    # --- the protocol ---------------------------------------------------------------

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return Answer(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        if method == "GET" and path == f"{self.prefix}/models":
            return Answer(200, {"object": "list", "data": [self.model_entry(m) for m in self.models]})
        if method == "POST" and path == f"{self.prefix}/chat/completions":
            return self.complete(body)
        return Answer(404, {"error": {"message": f"Unknown path {path}", "type": "invalid_request_error"}})

    def prompt_tokens(self, messages: list[dict]) -> int:
        total = 3
        for m in messages:
            content = m.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            total += 4
            for part in parts:
                if part.get("type") == "text":
                    total += text_tokens(part.get("text", ""))
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                    total += self.image_tokens(url)
        return total

    def image_tokens(self, url: str) -> int:
        """OpenAI's high-detail rule: fit 2048 x 2048, shortest side to 768, count 512-px tiles."""
        size = png_size(url) or (2048, 768)
        w, h = size
        if max(w, h) > 2048:
            w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
        if min(w, h) > 768:
            w, h = w * 768 / min(w, h), h * 768 / min(w, h)
        tiles = -(-int(w) // 512) * -(-int(h) // 512)
        return self.image_base + self.image_per_tile * tiles

    def complete(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        if self.allowed_fields:
            extra = sorted(set(body) - self.allowed_fields)
            if extra:
                return self.error(400, f"Unrecognized request argument supplied: {extra[0]}", param=extra[0])
        refused = self.refuse(body)
        if refused is not None:
            return refused
        model = body.get("model")
        if model not in self.models:
            return self.error(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "'messages' must contain at least one message.", param="messages")
        if body.get("stream") is not True:
            return self.error(400, "This fake serves streamed completions only.")
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last_user.get("content")
        text = (
            content
            if isinstance(content, str)
            else " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
        )
        steer = directives(text)
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 10**9
        reasoning = steer.get("reasoning", 0)
        words = reply_words(model, steer.get("words", 6))
        finish = "stop"
        if len(words) + reasoning > limit:
            words, finish = words[: max(limit - reasoning, 0)], "length"
        prompt = self.prompt_tokens(messages)
        usage = self.usage(prompt=prompt, completion=len(words), reasoning=reasoning)
        include_usage = self.usage_always or bool((body.get("stream_options") or {}).get("include_usage"))
        return Answer(200, events=self.chunks(model, words, finish, usage if include_usage else None))

    def chunks(self, model: str, words: list[str], finish: str, usage: dict | None):
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        nil = {"usage": None} if usage is not None else {}
        yield (
            None,
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                **nil,
            },
        )
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield None, {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}], **nil}
        yield None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], **nil}
        if usage is not None:
            yield None, {**base, "choices": [], "usage": usage}
        yield None, "[DONE]"
