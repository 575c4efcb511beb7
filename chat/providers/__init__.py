"""Model providers: one adapter module per API, each declaring what its API accepts.

The one entry point for a model call is `chat_stream`: OpenAI-shaped messages (text and
image_url parts) in, a `ReplyStream` of text deltas out, with the reply's usage (input,
output including reasoning tokens, and whether it is an estimate) once it ends. Every
failure is a `ProviderError` with one of the codes below, whatever the provider.

| module       | API                                   | SDK       |
|--------------|---------------------------------------|-----------|
| openai       | OpenAI Chat Completions               | openai    |
| anthropic    | Anthropic Messages                    | anthropic |
| gemini       | Gemini's OpenAI compatibility layer   | openai    |
| mistral      | Mistral chat completions              | openai    |
| compatible   | any OpenAI-compatible server (demo, Ollama, vLLM, llama.cpp, LM Studio) | openai |

Error codes: timeout, provider_unreachable, rate_limited, provider_error (5xx),
provider_auth (401/403), provider_rejected (other 4xx), stream_interrupted.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from django.conf import settings

from chat.providers import anthropic, compatible, gemini, mistral, openai, openai_sdk
from chat.providers.base import (
    MAX_RETRY_AFTER_SECONDS,
    Capabilities,
    ProviderError,
    ReplyStream,
    StreamChunk,
    Usage,
)
from chat.providers.images import ImageInfo, image_info

if TYPE_CHECKING:
    from chat.models import ModelSpec

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "Capabilities",
    "ImageInfo",
    "ProviderError",
    "ReplyStream",
    "StreamChunk",
    "Usage",
    "adapter",
    "base_url",
    "capabilities",
    "chat_stream",
    "image_info",
    "image_tokens",
    "model_ids",
    "to_openai_messages",
    "translate_error",
]

ADAPTERS: dict[str, ModuleType] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
    "mistral": mistral,
    "openai_compatible": compatible,
}
translate_error = openai_sdk.translate_error


def adapter(spec: ModelSpec) -> ModuleType:
    return ADAPTERS.get(spec.api, compatible)


def capabilities(spec: ModelSpec) -> Capabilities:
    return adapter(spec).capabilities(spec.upstream_id)


def base_url(spec: ModelSpec) -> str:
    """The catalog's URL, unless the operator points the whole provider elsewhere
    (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GEMINI_BASE_URL, MISTRAL_BASE_URL)."""
    override = settings.PROVIDER_BASE_URLS.get(spec.api, "") if not spec.is_demo else ""
    return override or spec.base_url or adapter(spec).DEFAULT_BASE_URL


def image_tokens(spec: ModelSpec, url: str) -> int:
    """Tokens the model bills for one image, or its worst case when the size is unknown."""
    return adapter(spec).image_tokens(spec.upstream_id, image_info(url))


def chat_stream(
    *,
    spec: ModelSpec,
    messages: list[dict],
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    timeout: float | None = None,
) -> ReplyStream:
    """Open a streamed completion; raises ProviderError if the call fails before streaming.

    `timeout` (seconds) bounds the call and each read below MODEL_TIMEOUT_SECONDS: the
    worker passes the time its reply has left, so a stalled read ends before the hold does."""
    if spec.is_demo and not settings.DEMO_ALLOWED:
        # The last lock: whatever queued it, production never calls the demo server.
        raise ProviderError(
            code="model_unavailable", message="The demo model never answers in production.", transient=False
        )
    module = adapter(spec)
    caps = module.capabilities(spec.upstream_id)
    body = openai_sdk.request_body(
        caps=caps,
        model=spec.upstream_id,
        messages=messages,
        max_tokens=max_tokens or spec.max_output_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
    )

    def estimate_input() -> int:
        from chat.tokens import estimate_request_tokens

        return estimate_request_tokens(spec, messages)

    if timeout is not None:
        body["timeout"] = timeout
    return module.stream(
        base_url=base_url(spec), api_key=spec.api_key, caps=caps, body=body, estimate_input=estimate_input
    )


def model_ids(spec: ModelSpec) -> set[str]:
    """The model ids the provider lists for this model's key; raises ProviderError."""
    return adapter(spec).model_ids(base_url=base_url(spec), api_key=spec.api_key)


def to_openai_messages(messages: list[tuple[str, str, list[dict]]]) -> list[dict]:
    """(role, content, attachments) triples to the chat-completions message format."""
    out: list[dict] = []
    for role, content, attachments in messages:
        images = [a["url"] for a in attachments or [] if a.get("type") == "image"]
        if images and role == "user":
            parts: list[dict] = [{"type": "text", "text": content}] if content else []
            parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
            out.append({"role": role, "content": parts})
        else:
            out.append({"role": role, "content": content})
    return out
