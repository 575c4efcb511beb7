"""An OpenAI-shaped API's streamed reply, read from its server-sent events as bytes arrive:
the worker's adapters (chat/providers/openai_sdk.py) and the /v1 path (openai_api/upstream.py)
both read them here, from the raw response the `openai` SDK hands back, rather than through
its `Stream`, which builds a typed object for every chunk and stops reading at `[DONE]`
(before the body's end, which costs the connection).

The format (html.spec.whatwg.org, "Interpreting an event stream"): lines end in CRLF, LF or
CR; `data:` lines (one leading space dropped) are joined by newlines and dispatched at a
blank line; other fields and `:` comments are ignored, as OpenAI-shaped streams carry
everything in `data`. `[DONE]` ends the stream. A chunk whose data has an `error` is a
failure, raised as `openai.AsyncStream` raises it.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai


class EventReader:
    """Feed it the body's bytes as they come; it gives back the data of each complete event."""

    __slots__ = ("_buffer", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False  # [DONE] seen: nothing after it is an event

    def feed(self, data: bytes) -> list[bytes]:
        """The data of the events that `data` completes (the rest waits for more bytes)."""
        buffer = self._buffer + data
        held = b""
        if b"\r" in buffer:  # CRLF or CR line ends (a CR at the end may be half of a CRLF)
            held = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[: len(buffer) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer + held
            return []
        self._buffer = buffer[end + 2 :] + held
        return self._dispatch(buffer[:end].split(b"\n\n"))

    def end(self) -> list[bytes]:
        """At the body's end: an event that lacked its closing blank line."""
        rest, self._buffer = self._buffer, b""
        return [] if self.done else self._dispatch([rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n")])

    def _dispatch(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
            if not lines:
                continue
            data = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
            if data.startswith(b"[DONE]"):
                self.done = True
                break
            out.append(data)
        return out


def delta(chunk: Any, request: httpx2.Request) -> tuple[str, str | None, dict | None] | None:
    """A chunk's text, finish reason and usage (None: not a chunk object); an `error` chunk
    raises `openai.APIError`, as the SDK's stream does."""
    if not isinstance(chunk, dict):
        return None
    if error := chunk.get("error"):
        message = error.get("message") if isinstance(error, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise openai.APIError(message=message, request=request, body=error)
    usage = chunk.get("usage")
    text, finish = "", None
    if choices := chunk.get("choices"):
        choice = choices[0]
        piece = choice.get("delta")
        text = (piece.get("content") or "") if piece else ""
        finish = choice.get("finish_reason")
    return text, finish, usage if isinstance(usage, dict) else None
