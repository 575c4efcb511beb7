"""The one wrapper around the `openai` SDK: every model call goes through `chat_stream`.

Every catalog model speaks the OpenAI chat-completions protocol (OpenAI, Anthropic,
Google and Mistral all offer it), so one client path serves them all. The SDK's own
retries are off: the worker decides what to retry, and never once text has streamed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
from django.conf import settings

from chat.models import ModelSpec

log = logging.getLogger(__name__)

# Longest wait a Retry-After header may impose before the first token.
MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed reply: text, and/or the usage of the final chunk."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    """A model call that failed; `transient` ones may be retried before the first token."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


_clients: dict[tuple[str, str, float], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(spec: ModelSpec) -> openai.OpenAI:
    """One client (and connection pool) per endpoint and key: building one costs milliseconds."""
    timeout = float(settings.MODEL_TIMEOUT_SECONDS)
    key = (spec.base_url, spec.api_key, timeout)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = openai.OpenAI(base_url=spec.base_url, api_key=spec.api_key, max_retries=0, timeout=timeout)
                _clients[key] = client
    return client


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(max(float(raw_ms) / 1000, 0.0), MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
    return str(exc.message)[:300]


def translate_error(exc: Exception) -> ProviderError:
    """Map an SDK or transport error to a ProviderError with a message a user can read."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            code="timeout",
            message=f"The model did not answer within {settings.MODEL_TIMEOUT_SECONDS} seconds.",
            transient=True,
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(code="provider_unreachable", message="Could not reach the model provider.", transient=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _provider_message(exc)
        if status == 429:
            return ProviderError(
                code="rate_limited",
                message="The model provider is limiting requests right now; try again in a moment.",
                transient=True,
                status=status,
                retry_after=_retry_after(exc.response.headers),
            )
        if status >= 500 or status in (408, 409):
            return ProviderError(
                code="provider_error",
                message=f"The model provider had an error (HTTP {status}).",
                transient=True,
                status=status,
                retry_after=_retry_after(exc.response.headers),
            )
        if status in (401, 403):
            return ProviderError(
                code="provider_auth",
                message="The model provider refused this service's API key; the operator has been told.",
                transient=False,
                status=status,
            )
        return ProviderError(
            code="provider_rejected",
            message=f"The model provider refused the request (HTTP {status}): {detail}",
            transient=False,
            status=status,
        )
    if isinstance(exc, openai.APIError):
        return ProviderError(code="provider_error", message=f"The model provider had an error: {exc}", transient=True)
    # Transport errors raised while reading the stream (a connection cut mid-reply).
    return ProviderError(
        code="stream_interrupted",
        message=f"The connection to the model provider broke ({exc.__class__.__name__}).",
        transient=True,
    )


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


class ReplyStream:
    """An open streamed reply: iterate for chunks; `close()` stops it early (cancel)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __iter__(self) -> Iterator[StreamChunk]:
        try:
            for chunk in self._raw:
                usage = None
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0,
                        output_tokens=chunk.usage.completion_tokens or 0,
                    )
                text = ""
                finish = None
                if chunk.choices:
                    choice = chunk.choices[0]
                    text = (choice.delta.content or "") if choice.delta else ""
                    finish = choice.finish_reason
                if text or usage is not None or finish is not None:
                    yield StreamChunk(text=text, usage=usage, finish_reason=finish)
        except Exception as exc:
            raise translate_error(exc) from exc

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # closing a broken connection may fail; it is closed either way
            log.debug("closing a reply stream failed", exc_info=True)


def chat_stream(*, spec: ModelSpec, messages: list[dict], max_tokens: int | None = None) -> ReplyStream:
    """Open a streamed completion; raises ProviderError if the call fails before streaming."""
    if spec.is_demo and not settings.DEMO_ALLOWED:
        # The last lock: whatever queued it, production never calls the demo server.
        raise ProviderError(code="model_unavailable", message=spec.unavailable_reason, transient=False)
    try:
        raw = _client(spec).chat.completions.create(
            model=spec.upstream_id,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=max_tokens or spec.max_output_tokens,
        )
    except Exception as exc:
        raise translate_error(exc) from exc
    return ReplyStream(raw)
