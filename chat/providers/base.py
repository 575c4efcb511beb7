"""What every provider adapter shares: usage, chunks, errors, declared capabilities, the reply stream."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Longest wait a Retry-After header may impose before the first token.
MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Usage:
    """Tokens a reply is billed for: output includes reasoning tokens; `estimated` when the
    provider did not report them."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False


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


@dataclass(frozen=True)
class Capabilities:
    """What a provider's API accepts and how it answers, as its documentation says (docs/providers.md)."""

    stream_options: bool  # accepts stream_options={"include_usage": true}
    usage_unasked: bool  # sends usage in the last streamed chunk without being asked
    output_tokens_param: str  # "max_tokens", "max_completion_tokens" (or Anthropic's required max_tokens)
    image_formats: frozenset[str]  # image media subtypes accepted: png, jpeg, gif, webp
    sampling_exclusive: bool = False  # temperature and top_p may not be sent together
    sampling: bool = True  # takes temperature / top_p at all
    reasoning_outside_completion: bool = False  # completion_tokens may leave out reasoning tokens


ALL_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})


def retry_after(headers: Any) -> float | None:
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


def status_error(*, status: int, detail: str, headers: Any, timeout_seconds: object) -> ProviderError:
    """An HTTP error answer as a ProviderError; the same codes for every provider."""
    if status == 429:
        return ProviderError(
            code="rate_limited",
            message="The model provider is limiting requests right now; try again in a moment.",
            transient=True,
            status=status,
            retry_after=retry_after(headers),
        )
    if status >= 500 or status in (408, 409, 529):
        return ProviderError(
            code="provider_error",
            message=f"The model provider had an error (HTTP {status}).",
            transient=True,
            status=status,
            retry_after=retry_after(headers),
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


def timeout_error(seconds: object) -> ProviderError:
    return ProviderError(code="timeout", message=f"The model did not answer within {seconds} seconds.", transient=True)


def unreachable_error() -> ProviderError:
    return ProviderError(code="provider_unreachable", message="Could not reach the model provider.", transient=True)


def interrupted_error(exc: Exception) -> ProviderError:
    # Transport errors raised while reading the stream (a connection cut mid-reply).
    return ProviderError(
        code="stream_interrupted",
        message=f"The connection to the model provider broke ({exc.__class__.__name__}).",
        transient=True,
    )


class ReplyStream:
    """An open streamed reply: iterate for chunks; `usage` once it ends; `close()` stops it early.

    `usage` is what the provider reported, or, when it reported nothing (a cut stream,
    a server that does not count), an offline estimate marked `estimated`.
    """

    def __init__(
        self,
        chunks: Iterable[StreamChunk],
        *,
        close: Callable[[], None],
        translate: Callable[[Exception], ProviderError],
        estimate_input: Callable[[], int],
    ) -> None:
        self._chunks = chunks
        self._close = close
        self._translate = translate
        self._estimate_input = estimate_input
        self._reported: Usage | None = None
        self._parts: list[str] = []

    def __iter__(self) -> Iterator[StreamChunk]:
        try:
            for chunk in self._chunks:
                if chunk.usage is not None:
                    self._reported = chunk.usage
                if chunk.text:
                    self._parts.append(chunk.text)
                yield chunk
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    @property
    def usage(self) -> Usage:
        if self._reported is not None:
            return self._reported
        from chat.tokens import estimate_output_tokens

        return Usage(self._estimate_input(), estimate_output_tokens("".join(self._parts)), estimated=True)

    def close(self) -> None:
        try:
            self._close()
        except Exception:  # closing a broken connection may fail; it is closed either way
            log.debug("closing a reply stream failed", exc_info=True)
