"""Mistral's chat completions (docs.mistral.ai/api, POST /v1/chat/completions).

- The request schema forbids fields it does not define: 422 "extra_forbidden" ("Extra
  inputs are not permitted") for stream_options, max_completion_tokens, a message's
  `name` and others (seen in dnakov/anon-kode#53, BerriAI/litellm#8978,
  editor-code-assistant/eca#231).
- The output limit is max_tokens.
- Usage comes in the last streamed chunk without being asked.
"""

from __future__ import annotations

from chat.providers import openai_sdk
from chat.providers.base import ALL_IMAGE_FORMATS, Capabilities
from chat.providers.images import ImageInfo

CAPABILITIES = Capabilities(
    stream_options=False,
    usage_unasked=True,
    output_tokens_param="max_tokens",
    image_formats=ALL_IMAGE_FORMATS,
)
DEFAULT_BASE_URL = "https://api.mistral.ai/v1"
# Pixtral-style vision: one token per 16x16 patch (plus a break token per row); images
# are scaled to at most 1024x1024, so about 4,200 tokens is the most one can take.
IMAGE_MAX_TOKENS = 4_160


def image_tokens(upstream_id: str, image: ImageInfo) -> int:
    if image.width and image.height:
        scale = min(1.0, 1024 / max(image.width, image.height))
        cols = -(-int(image.width * scale) // 16)
        rows = -(-int(image.height * scale) // 16)
        return min(rows * (cols + 1), IMAGE_MAX_TOKENS)
    return IMAGE_MAX_TOKENS


def capabilities(upstream_id: str) -> Capabilities:
    return CAPABILITIES


stream = openai_sdk.stream
model_ids = openai_sdk.model_ids
