"""GET /api/v1/keys: the caller's API keys with their limits and what each has spent."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from openai_api.selectors import key_usage
from panels.models import ApiKey


class ApiKeyListApi(APIView):
    class OutputSerializer(serializers.Serializer):
        prefix = serializers.CharField(help_text="The key's public part: pnl_<prefix>_…")
        name = serializers.CharField()
        active = serializers.BooleanField(help_text="Neither revoked nor expired.")
        created_at = serializers.DateTimeField()
        last_used_at = serializers.DateTimeField(allow_null=True)
        revoked_at = serializers.DateTimeField(allow_null=True)
        expires_at = serializers.DateTimeField(allow_null=True)
        spend_limit = serializers.IntegerField(
            allow_null=True, help_text="Credits the key may spend per limit period; null for no limit."
        )
        limit_period = serializers.ChoiceField(choices=ApiKey.LimitPeriod.choices)
        calls = serializers.IntegerField(
            help_text="Calls to /v1/chat/completions made with the key (refusals not counted)."
        )
        spent_total = serializers.IntegerField(help_text="Credits charged to the key, holds of running calls included.")
        spent_in_period = serializers.IntegerField(
            help_text="The same, in the current limit period (UTC day or month)."
        )
        remaining = serializers.IntegerField(
            allow_null=True, help_text="Credits the limit leaves; null without a limit."
        )

    serializer_class = OutputSerializer

    @extend_schema(responses=OutputSerializer(many=True), summary="The caller's API keys, their limits and usage")
    def get(self, request: Request) -> Response:
        rows = []
        for key in ApiKey.objects.filter(user=request.user).order_by("-created_at"):
            usage = key_usage(api_key=key)
            rows.append(
                {
                    "prefix": key.prefix,
                    "name": key.name,
                    "active": key.active,
                    "created_at": key.created_at,
                    "last_used_at": key.last_used_at,
                    "revoked_at": key.revoked_at,
                    "expires_at": key.expires_at,
                    "spend_limit": key.spend_limit,
                    "limit_period": key.limit_period,
                    "calls": usage.calls,
                    "spent_total": usage.spent_total,
                    "spent_in_period": usage.spent_in_period,
                    "remaining": usage.remaining,
                }
            )
        return Response(self.OutputSerializer(rows, many=True).data)
