"""A fake of OpenAI's Chat Completions API (platform.openai.com/docs/api-reference/chat/create).

Enforces, as documented:
- fields outside the request schema are refused ("Unrecognized request argument supplied");
- `max_tokens` is deprecated and not compatible with o-series and GPT-5-class models: they
  answer 400 "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens' instead"
  (koosoli/ESPHomeDesigner#379, teilomillet/gollm#33);
- `stream_options` only with `stream: true`;
- usage is streamed only when asked (`stream_options.include_usage`), as a last chunk with
  empty `choices`; completion_tokens includes reasoning tokens.
Images are counted by OpenAI's vision rule: GPT-4o 85 + 170 per 512-px tile, GPT-4o mini
2,833 + 5,667 per tile.
"""

from __future__ import annotations

import re

from tests.fakes.model_api import Answer
from tests.fakes.openai_compatible_api import FakeChatCompletions

REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")


class FakeOpenAI(FakeChatCompletions):
    name = "openai"
    allowed_fields = frozenset(
        {
            "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
            "top_p", "stop", "n", "user", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
            "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort",
            "service_tier", "store", "metadata", "modalities", "prediction", "audio", "web_search_options",
        }
    )  # fmt: skip

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("models", ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-11-20", "gpt-5", "o3-mini"])
        super().__init__(**kwargs)
        self._model_in_flight = ""

    def refuse(self, body: dict) -> Answer | None:
        model = str(body.get("model", ""))
        if "max_tokens" in body and REASONING_MODELS.match(model):
            return self.error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                code="unsupported_parameter",
                param="max_tokens",
            )
        if "stream_options" in body and body.get("stream") is not True:
            return self.error(
                400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
        self.image_base, self.image_per_tile = (2_833, 5_667) if model.startswith("gpt-4o-mini") else (85, 170)
        return None
