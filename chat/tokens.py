"""Offline token estimates for holds, context trimming and replies billed without usage.

tiktoken downloads its encodings on first use, which fails offline, so estimates
come from character counts. They lean high on purpose: a hold that is too small
means a reply the user is not charged for in full (the post is capped at the hold).
English text runs about four characters per token; other scripts (CJK, emoji,
accented text) can be one token per character or more, so non-ASCII characters
count one each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

CHARS_PER_TOKEN = 4
# The role and separators every chat message adds (OpenAI's accounting uses 3-4).
MESSAGE_OVERHEAD_TOKENS = 4
# Every reply is primed with a few tokens of its own.
REPLY_PRIMING_TOKENS = 3
# GPT-4o bills a high-detail image at 85 + 170 per 512-px tile, at most 1,445
# tokens (8 tiles); other providers charge less for the same image.
IMAGE_TOKENS = 1_500


def estimate_text_tokens(text: str) -> int:
    if not text:
        return 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_chars = len(text) - ascii_chars
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + other_chars


def estimate_message_tokens(content: str, *, images: int = 0) -> int:
    """One message as sent to a model: its text, its images and its framing."""
    return estimate_text_tokens(content) + images * IMAGE_TOKENS + MESSAGE_OVERHEAD_TOKENS


def estimate_prompt_tokens(messages: Iterable[tuple[str, int]]) -> int:
    """A whole request, from (content, image count) pairs."""
    return REPLY_PRIMING_TOKENS + sum(estimate_message_tokens(content, images=n) for content, n in messages)


def estimate_output_tokens(text: str) -> int:
    """The tokens of generated text whose usage the provider did not report."""
    return estimate_text_tokens(text)
