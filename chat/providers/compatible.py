"""Any OpenAI-compatible server: the demo server, Ollama, vLLM, llama.cpp's server, LM Studio.

They take stream_options and max_tokens; some report no usage at all, so a reply from
one is billed on an estimate marked as such. Images are held as GPT-4o would count them.
"""

from __future__ import annotations

from chat.providers import openai_sdk
from chat.providers.base import ALL_IMAGE_FORMATS, Capabilities
from chat.providers.images import ImageInfo
from chat.providers.openai import image_tokens as openai_image_tokens

CAPABILITIES = Capabilities(
    stream_options=True,
    usage_unasked=False,
    output_tokens_param="max_tokens",
    image_formats=ALL_IMAGE_FORMATS,
)
DEFAULT_BASE_URL = ""


def image_tokens(upstream_id: str, image: ImageInfo) -> int:
    return openai_image_tokens("gpt-4o", image)


def capabilities(upstream_id: str) -> Capabilities:
    return CAPABILITIES


stream = openai_sdk.stream
model_ids = openai_sdk.model_ids
