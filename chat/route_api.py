"""POST /api/v1/route: which model Auto would send a prompt to, and why. Charges nothing."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from chat.api import ChatApi
from chat.router import CHEAP, FLAGSHIP
from chat.routing import ROUTE_MAX_CHARS, route_for_message
from panels.ratelimit import ScopedRateLimit


class RouteCreateApi(ChatApi):
    throttle_classes = [ScopedRateLimit]
    throttle_scope = "route"

    class InputSerializer(serializers.Serializer):
        content = serializers.CharField(
            max_length=ROUTE_MAX_CHARS,
            # Untrimmed, as the send path takes it: the router reads lengths and line breaks.
            trim_whitespace=False,
            help_text=f'The prompt, as it would be sent with model "auto" (1 to {ROUTE_MAX_CHARS:,} characters).',
        )

        def validate_content(self, value: str) -> str:
            if not value.strip():
                raise serializers.ValidationError("Write the prompt to route.")
            return value

    class OutputSerializer(serializers.Serializer):
        tier = serializers.ChoiceField(choices=[CHEAP, FLAGSHIP], help_text="The tier the router chose.")
        model = serializers.CharField(
            help_text="The model id that would answer (the demo model when no provider key is set)."
        )
        reason = serializers.CharField(help_text='One line, e.g. "Auto -> GPT-4o mini: classification or tagging".')

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Empty or oversized content"),
            401: OpenApiResponse(description="Not logged in and no API key"),
        },
        description="Preview Auto for one prompt, as if it started a new conversation: no message is stored, "
        "no model is called and nothing is charged.",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        route = route_for_message(content=serializer.validated_data["content"])
        return Response(
            self.OutputSerializer({"tier": route.tier, "model": route.spec.slug, "reason": route.reason}).data
        )
