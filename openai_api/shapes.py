"""OpenAI's response shapes: `chat.completion`, `chat.completion.chunk` and `usage`.

Field by field as OpenAI's API reference gives them. `model` is the catalog id of
the model that answered (for Auto, the routed one); the `panels` object adds what
OpenAI has no field for: the cost in credits and, for Auto, the tier and the reason.
"""

from __future__ import annotations

import json
from typing import Any

from openai_api.upstream import Usage


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def completion(
    *,
    id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage: Usage,
    panels: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_dict(usage),
        "panels": panels,
    }


class Chunks:
    """The SSE frames of one streamed completion. Text chunks are formatted from a
    prefix computed once: they are the hot path of a stream."""

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        self.head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage
        tail = ',"usage":null' if include_usage else ""
        self._text_prefix = (
            "data: "
            + json.dumps(self.head, separators=(",", ":"))[:-1]
            + ',"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":'
        )
        self._text_suffix = '},"logprobs":null,"finish_reason":null}]' + tail + "}\n\n"

    def _frame(self, data: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    def _chunk(self, choices: list, **more: Any) -> dict[str, Any]:
        data = {**self.head, "system_fingerprint": None, "choices": choices, **more}
        if self.include_usage and "usage" not in data:
            data["usage"] = None
        return data

    def role(self, panels: dict[str, Any]) -> bytes:
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self._frame(
            self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], panels=panels)
        )

    def text(self, text: str) -> bytes:
        return (self._text_prefix + json.dumps(text) + self._text_suffix).encode()

    def finish(self, finish_reason: str) -> bytes:
        return self._frame(self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}]))

    def usage(self, usage: Usage, panels: dict[str, Any]) -> bytes:
        return self._frame(self._chunk([], usage=usage_dict(usage), panels=panels))

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        # What OpenAI sends when a stream fails part-way; the openai SDK raises it as an APIError.
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
