"""OpenAI's Chat Completions API (platform.openai.com/docs/api-reference/chat/create).

- Streamed usage only when asked with stream_options.include_usage: one last chunk, empty choices.
- max_tokens is deprecated and refused by o-series and GPT-5-class models; max_completion_tokens
  is accepted by every chat model, so it is always the one sent.
- completion_tokens includes reasoning tokens (completion_tokens_details is a breakdown).
- Images: high detail costs a base plus a price per 512-px tile (images.openai_tiles).
"""

from __future__ import annotations

from chat.providers import openai_sdk
from chat.providers.base import ALL_IMAGE_FORMATS, Capabilities
from chat.providers.images import OPENAI_MAX_TILES, ImageInfo, openai_tiles

CAPABILITIES = Capabilities(
    stream_options=True,
    usage_unasked=False,
    output_tokens_param="max_completion_tokens",
    image_formats=ALL_IMAGE_FORMATS,
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"

# (base, per tile) tokens of a high-detail image, by model family (longest prefix wins),
# from OpenAI's vision guide. Unknown families are held at GPT-4o's rate.
IMAGE_TOKENS = {
    "gpt-4o-mini": (2_833, 5_667),
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-5": (70, 140),
    "o1": (75, 150),
    "o3": (75, 150),
}


def image_token_rates(upstream_id: str) -> tuple[int, int]:
    for prefix in sorted(IMAGE_TOKENS, key=len, reverse=True):
        if upstream_id.startswith(prefix):
            return IMAGE_TOKENS[prefix]
    return IMAGE_TOKENS["gpt-4o"]


def image_tokens(upstream_id: str, image: ImageInfo) -> int:
    base, per_tile = image_token_rates(upstream_id)
    if image.width and image.height:
        tiles = openai_tiles(image.width, image.height)
    else:
        tiles = OPENAI_MAX_TILES  # size unknown (an https URL): the worst case
    return base + per_tile * tiles


def capabilities(upstream_id: str) -> Capabilities:
    return CAPABILITIES


stream = openai_sdk.stream
model_ids = openai_sdk.model_ids
