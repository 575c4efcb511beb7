"""HTTP API v1: edit a message of yours, or regenerate a reply. Each replaces the tail of
the conversation from that point (chat/services.py says how) and answers like a send."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from chat import services
from chat.api import _SEND_ERRORS, IDEMPOTENCY_KEY_PARAMETER, ChatApi, ReplyAcceptedSerializer, _accepted
from chat.api import _idempotency_key as idempotency_key
from chat.selectors import get_message_for_user
from panels.ratelimit import ScopedRateLimit

_REVISION_CONFLICTS = OpenApiResponse(
    description="reply_in_progress: a reply of the conversation is still running; superseded: the message "
    "was already replaced; not_a_reply / not_editable: the wrong kind of message; idempotency_key_reused"
)


class MessageRegenerateApi(ChatApi):
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "send"

    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(
            max_length=60, required=False, allow_blank=True, default="", help_text="Empty: the model asked before."
        )

    @extend_schema(
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={202: ReplyAcceptedSerializer, **_SEND_ERRORS, 409: _REVISION_CONFLICTS},
        description="Another reply to the message this reply answered. The reply and every message after it "
        "are replaced (left out of the conversation, never sent to a model again); what they cost stays "
        "charged. The new reply has `retry_of` set to this one and its own hold.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        key = idempotency_key(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reply = services.message_regenerate(
            user=request.user, message=message, idempotency_key=key, **serializer.validated_data
        )
        return _accepted(reply)


class MessageEditApi(ChatApi):
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "send"

    class InputSerializer(serializers.Serializer):
        content = serializers.CharField(trim_whitespace=False, allow_blank=True)
        model = serializers.CharField(max_length=60, help_text='A model id from /api/v1/models, or "auto".')

    @extend_schema(
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={202: ReplyAcceptedSerializer, **_SEND_ERRORS, 409: _REVISION_CONFLICTS},
        description="Rewrite a message you sent: it and every message after it are replaced by the new text "
        "(its images stay attached) and a new reply to it. What the replaced replies cost stays charged.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = get_message_for_user(user=request.user, message_id=message_id)
        key = idempotency_key(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reply = services.message_edit(
            user=request.user, message=message, idempotency_key=key, **serializer.validated_data
        )
        return _accepted(reply)
