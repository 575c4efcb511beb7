"""A fake of Mistral's chat completions (docs.mistral.ai/api, POST /v1/chat/completions).

Enforces, as Mistral's API does: the request schema forbids fields it does not define,
answering 422 `extra_forbidden` "Extra inputs are not permitted" in the shape
`{"object": "error", "message": {"detail": [...]}, "type": "invalid_request_error", ...}`.
Reported for `stream_options` (dnakov/anon-kode#53, BerriAI/litellm#8978),
`max_completion_tokens` (editor-code-assistant/eca#231), `n` and `frequency_penalty`
(mistralai/platform-docs-public#7), and a message's `name` / `tool_calls`
(Gage-Technologies/mistral-go#2). The output limit is `max_tokens`. Usage comes in the
last streamed chunk, beside its finish_reason, without being asked.
"""

from __future__ import annotations

import time

from tests.fakes.model_api import Answer
from tests.fakes.openai_compatible_api import FakeChatCompletions

BODY_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
        "response_format", "tools", "tool_choice", "presence_penalty", "safe_prompt", "prediction",
        "parallel_tool_calls", "prompt_mode",
    }
)  # fmt: skip
MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "prefix", "tool_calls"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


class FakeMistral(FakeChatCompletions):
    name = "mistral"
    usage_always = True

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("models", ["mistral-small-2603", "mistral-large-2512"])
        super().__init__(**kwargs)

    def _forbidden(self, loc: list, value: object) -> dict:
        return {"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted", "input": value}

    def refuse(self, body: dict) -> Answer | None:
        detail = [self._forbidden(["body", k], body[k]) for k in sorted(set(body) - BODY_FIELDS)]
        for i, message in enumerate(body.get("messages") or []):
            role = message.get("role")
            for k in sorted(set(message) - MESSAGE_FIELDS.get(role, set())):
                detail.append(self._forbidden(["body", "messages", i, role, k], message[k]))
        if detail:
            return Answer(
                422,
                {
                    "object": "error",
                    "message": {"detail": detail},
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                },
            )
        return None

    def usage(self, *, prompt: int, completion: int, reasoning: int) -> dict:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,
            "total_tokens": prompt + completion + reasoning,
        }

    def chunks(self, model: str, words: list[str], finish: str, usage: dict | None):
        base = {"id": "fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        yield (
            None,
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        )
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield None, {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        yield (
            None,
            {**base, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": finish}], "usage": usage},
        )
        yield None, "[DONE]"
