"""Gemini through its OpenAI compatibility layer (ai.google.dev/gemini-api/docs/openai).

- Base URL https://generativelanguage.googleapis.com/v1beta/openai/; stream_options
  include_usage is accepted; the output limit is max_tokens (max_completion_tokens is
  also listed, max_tokens is the one every Gemini model takes).
- Thinking models: the layer's completion_tokens may leave out the thought tokens that
  total_tokens counts and Google bills as output (mozilla-ai/any-llm#1290,
  Portkey-AI/gateway#1458), so output is taken as total - prompt when that is larger.
- Images: PNG, JPEG, WEBP, HEIC, HEIF; GIF is refused (ai.google.dev/gemini-api/docs/image-understanding).
"""

from __future__ import annotations

from chat.providers import openai_sdk
from chat.providers.base import Capabilities
from chat.providers.images import ImageInfo

CAPABILITIES = Capabilities(
    stream_options=True,
    usage_unasked=False,
    output_tokens_param="max_tokens",
    image_formats=frozenset({"png", "jpeg", "webp"}),
    reasoning_outside_completion=True,
)
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"
# Gemini 3 models read an image at "high" media resolution by default: up to 1,120 tokens
# (ai.google.dev/gemini-api/docs/media-resolution); older models 258 per 768-px tile.
IMAGE_TOKENS = 1_120


def image_tokens(upstream_id: str, image: ImageInfo) -> int:
    return IMAGE_TOKENS


def capabilities(upstream_id: str) -> Capabilities:
    return CAPABILITIES


stream = openai_sdk.stream
model_ids = openai_sdk.model_ids
