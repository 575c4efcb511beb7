"""Chat's domain errors; the API turns each into its status and `{"error": {code, message}}`."""

from __future__ import annotations


class ChatError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidMessage(ChatError):
    """Bad content, an unknown model, an image for a text-only model, too long a message."""


class ModelUnavailable(ChatError):
    code = "model_unavailable"


class Gone(ChatError):
    """The conversation was deleted while this request was on its way: as if it never existed."""

    status = 404
    code = "not_found"


class Conflict(ChatError):
    status = 409
    code = "conflict"


class ServiceUnavailable(ChatError):
    status = 503
    code = "service_unavailable"


class TooManyReplies(ChatError):
    """The user already has MAX_REPLIES_IN_FLIGHT_PER_USER replies queued or streaming."""

    status = 429
    code = "too_many_replies"
    retry_after = 5
