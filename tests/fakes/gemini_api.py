"""A fake of Gemini's OpenAI compatibility layer (ai.google.dev/gemini-api/docs/openai):
POST /v1beta/openai/chat/completions and GET /v1beta/openai/models, Bearer key.

Enforces, as documented:
- a model that is shut down or unknown is 404 NOT_FOUND (gemini-2.0-flash since 2026-06-01,
  ai.google.dev/gemini-api/docs/deprecations); errors come as a list of Google error objects;
- images: PNG, JPEG, WEBP, HEIC, HEIF; GIF is refused (400 INVALID_ARGUMENT,
  ai.google.dev/gemini-api/docs/image-understanding);
- usage only with stream_options.include_usage. Thinking models spend thought tokens that
  are billed as output and counted in total_tokens, but the layer's completion_tokens leaves
  them out (mozilla-ai/any-llm#1290, Portkey-AI/gateway#1458); they show in
  completion_tokens_details.reasoning_tokens.
Models are listed as "models/<id>".
"""

from __future__ import annotations

import re

from tests.fakes.model_api import Answer
from tests.fakes.openai_compatible_api import FakeChatCompletions

ACCEPTED_IMAGES = {"png", "jpeg", "webp", "heic", "heif"}


class FakeGemini(FakeChatCompletions):
    name = "gemini"
    prefix = "/v1beta/openai"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("models", ["gemini-3.8-flash", "gemini-3.5-flash-lite"])
        super().__init__(**kwargs)

    def error(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> Answer:
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND"}
        return Answer(
            status, [{"error": {"code": status, "message": message, "status": statuses.get(status, "UNKNOWN")}}]
        )

    def model_entry(self, model: str) -> dict:
        return {"id": f"models/{model}", "object": "model", "owned_by": "google"}

    def image_tokens(self, url: str) -> int:
        return 258

    def refuse(self, body: dict) -> Answer | None:
        model = body.get("model")
        if model not in self.models:
            return self.error(
                404, f"models/{model} is not found for API version v1beta, or is not supported for generateContent."
            )
        for message in body.get("messages") or []:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") != "image_url":
                    continue
                url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                kind = re.match(r"^data:image/([a-z]+);", url)
                if kind and kind.group(1) not in ACCEPTED_IMAGES:
                    return self.error(400, f"Unsupported MIME type: image/{kind.group(1)}")
        return None

    def usage(self, *, prompt: int, completion: int, reasoning: int) -> dict:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion + reasoning,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
