"""A chat-completions request body, checked field by field against OpenAI's reference.

What is accepted is passed on to the model where its provider takes it; what Panels
does not implement (tools, n > 1, JSON mode, logprobs...) is refused with a 400 that
names the parameter, never dropped silently: a client relying on it would get a
different answer than it asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from openai_api.errors import OpenAIError
from panels.parsers import contains_nul

MAX_STOP_SEQUENCES = 4  # OpenAI: "Up to 4 sequences"
MAX_IMAGES = 8
_IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")
ROLES = ("system", "developer", "user", "assistant")

# Parameters of OpenAI's API that Panels does not implement (a 400 naming them). A
# value equal to the parameter's default is accepted, since some clients always send it.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "logprobs": (None, False),
    "top_logprobs": (None,),
    "logit_bias": (None, {}),
    "seed": (None,),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "metadata": (None, {}),
    "verbosity": (None,),
}
ACCEPTED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "user",
    "n",
    "safety_identifier",
    "prompt_cache_key",
}


@dataclass(frozen=True)
class Turn:
    role: str
    text: str  # the text parts, joined (for Auto and the token estimate)
    images: int
    content: str | list[dict]  # as it goes to the model


@dataclass
class CompletionRequest:
    model: str
    turns: list[Turn]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    user: str = ""
    body_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return sum(t.images for t in self.turns)

    def upstream_messages(self) -> list[dict]:
        # "developer" is OpenAI's newer name for "system"; every provider takes "system".
        return [{"role": "system" if t.role == "developer" else t.role, "content": t.content} for t in self.turns]


def _bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _bad(f"'{name}' must be a number from {low:g} to {high:g}; got {value!r}.", name)
    return float(value)


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"'{name}' must be a positive integer; got {value!r}.", name)
    return value


def _parts(content: list, index: int, role: str) -> tuple[str, int, list[dict]]:
    texts: list[str] = []
    images = 0
    parts: list[dict] = []
    for n, part in enumerate(content):
        where = f"messages[{index}].content[{n}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not (_IMAGE_DATA_URL.match(url) or url.startswith("https://")):
                raise _bad(
                    "An image must be a PNG, JPEG, GIF or WebP image as a base64 data URL, or an https URL.", where
                )
            detail = image.get("detail", "auto")
            if detail not in ("auto", "low", "high"):
                raise _bad("'detail' must be one of auto, low, high.", f"{where}.image_url.detail")
            images += 1
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        else:
            allowed = "text and image_url" if role == "user" else "text"
            raise _bad(f"Unsupported content part {kind!r} for role {role!r}: Panels accepts {allowed} parts.", where)
    return "\n".join(texts), images, parts


def _turn(message: Any, index: int) -> Turn:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _bad("Each message must be an object with 'role' and 'content'.", where)
    role = message.get("role")
    if role == "tool" or message.get("tool_calls") or message.get("function_call"):
        raise _bad("Tool and function calls are not supported by Panels' API.", where, "unsupported_parameter")
    if role not in ROLES:
        raise _bad(f"'role' must be one of {', '.join(ROLES)}; got {role!r}.", f"{where}.role")
    unknown = set(message) - {"role", "content", "name"}
    if unknown:
        raise _bad(f"Unsupported message field(s): {', '.join(sorted(unknown))}.", where, "unsupported_parameter")
    content = message.get("content")
    if isinstance(content, str):
        return Turn(role=role, text=content, images=0, content=content)
    if isinstance(content, list) and content:
        text, images, parts = _parts(content, index, role)
        if images == 0:
            return Turn(role=role, text=text, images=0, content=text)
        return Turn(role=role, text=text, images=images, content=parts)
    raise _bad("'content' must be a string or a non-empty list of content parts.", f"{where}.content")


def body_hash(raw: bytes | dict) -> str:
    data = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse(raw: bytes) -> CompletionRequest:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("We could not parse the JSON body of your request.", code="invalid_json") from None
    if contains_nul(body):
        # PostgreSQL's text and jsonb can't store U+0000: refused here, not as a 500 later.
        raise _bad("Text in the request may not contain NUL (\\u0000) characters.", code="invalid_json")
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", code="invalid_json")
    for name, defaults in UNSUPPORTED.items():
        if name in body and body[name] not in defaults:
            raise _bad(
                f"'{name}' is not supported by Panels' OpenAI-compatible API; remove it from the request.",
                name,
                "unsupported_parameter",
            )
    unknown = set(body) - ACCEPTED - set(UNSUPPORTED)
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required: a model id from GET /v1/models, or 'auto'.", "model", "missing_required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array.", "messages", "missing_required")
    turns = [_turn(m, i) for i, m in enumerate(messages)]
    if sum(t.images for t in turns) > MAX_IMAGES:
        raise _bad(f"At most {MAX_IMAGES} images per request.", "messages")

    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("Panels generates one choice per request: 'n' must be 1.", "n", "unsupported_parameter")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream")
    stream = bool(stream)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _bad("'stream_options' takes only 'include_usage'.", "stream_options")
        include_usage = options.get("include_usage") is True

    max_tokens, param = _positive_int(body, "max_completion_tokens"), "max_completion_tokens"
    legacy = _positive_int(body, "max_tokens")
    if max_tokens is None:
        max_tokens, param = legacy, "max_tokens"
    elif legacy is not None and legacy != max_tokens:
        raise _bad("Set one of 'max_tokens' and 'max_completion_tokens', not both.", "max_tokens")

    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if (
            not isinstance(stop, list)
            or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stop)
        ):
            raise _bad(f"'stop' must be a string or an array of at most {MAX_STOP_SEQUENCES} strings.", "stop")
        stop = stop or None
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise _bad("'user' must be a string of at most 256 characters.", "user")

    return CompletionRequest(
        model=model,
        turns=turns,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        max_tokens_param=param,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=stop,
        user=user or "",
        body_hash=body_hash(body),
    )
