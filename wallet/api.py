from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wallet.selectors import entries_for_user, wallet_summary
from wallet.services import credits_to_usd


def _usd(credits: int) -> str:
    return f"{credits_to_usd(credits):.6f}"


class WalletDetailApi(APIView):
    class OutputSerializer(serializers.Serializer):
        balance = serializers.IntegerField()
        held = serializers.IntegerField()
        available = serializers.IntegerField()
        balance_usd = serializers.CharField()
        held_usd = serializers.CharField()
        available_usd = serializers.CharField()
        frozen = serializers.BooleanField()
        frozen_reason = serializers.CharField()

    serializer_class = OutputSerializer

    def get(self, request: Request) -> Response:
        summary = wallet_summary(user=request.user)
        data = {
            "balance": summary.balance,
            "held": summary.held,
            "available": summary.available,
            "balance_usd": _usd(summary.balance),
            "held_usd": _usd(summary.held),
            "available_usd": _usd(summary.available),
            "frozen": bool(summary.frozen_reason),
            "frozen_reason": summary.frozen_reason,
        }
        return Response(self.OutputSerializer(data).data)


class WalletEntryListApi(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        credits = serializers.IntegerField(help_text="Positive when credits entered the wallet.")
        usd = serializers.CharField()
        reference = serializers.CharField()
        memo = serializers.CharField()
        created_at = serializers.DateTimeField()

    class Pagination(PageNumberPagination):
        page_size = 50
        page_size_query_param = "page_size"
        max_page_size = 500

    serializer_class = OutputSerializer
    # Read by the schema generator, so the schema shows the paginated envelope and its parameters.
    pagination_class = Pagination

    @extend_schema(
        responses={
            200: OutputSerializer(many=True),
            404: OpenApiResponse(description="not_found: a page past the last one"),
        },
        description="Ledger lines, newest first.",
    )
    def get(self, request: Request) -> Response:
        account = getattr(request.user, "wallet", None)
        paginator = self.Pagination()
        page = paginator.paginate_queryset(entries_for_user(user=request.user), request, view=self)
        rows = [
            {
                "id": entry.pk,
                "kind": entry.kind,
                "credits": entry.signed_amount_for(account),
                "usd": _usd(entry.signed_amount_for(account)),
                "reference": entry.reference,
                "memo": entry.memo,
                "created_at": entry.created_at,
            }
            for entry in page
        ]
        return paginator.get_paginated_response(self.OutputSerializer(rows, many=True).data)
