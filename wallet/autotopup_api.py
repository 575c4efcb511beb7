"""GET, PUT, PATCH, DELETE /api/v1/wallet/auto-topup and POST /api/v1/wallet/auto-topup/card:
the wallet page's automatic top-up forms as JSON, through the same services and checks
(`autotopup_values`, wallet/autotopups.py)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from panels.api_errors import ApiError
from wallet import stripe_client
from wallet.autotopup_views import autotopup_values
from wallet.autotopups import (
    DEFAULT_AMOUNT_CENTS,
    DEFAULT_THRESHOLD_CREDITS,
    AutoTopupNoCard,
    autotopup_card_remove,
    autotopup_card_setup_start,
    autotopup_demo_card_save,
    autotopup_for_user,
    autotopup_provider,
    autotopup_resume,
    autotopup_settings_save,
)
from wallet.models import AutoTopup
from wallet.services import credits_for_cents, credits_to_usd
from wallet.topup_views import TopupThrottle
from wallet.topups import TopupAmountInvalid, TopupsUnavailable, TopupWalletFrozen


class CardSerializer(serializers.Serializer):
    brand = serializers.CharField(help_text="visa, mastercard..., or demo")
    last4 = serializers.CharField()


class LastAttemptSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The top-up (kind auto) it made.")
    status = serializers.CharField(help_text="created, pending, paid, failed, refunded...")
    amount_usd = serializers.CharField()
    created_at = serializers.DateTimeField()


class AutoTopupOutputSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = serializers.IntegerField(help_text="Credits: a top-up starts when the available balance falls below.")
    threshold_usd = serializers.CharField()
    amount_usd = serializers.CharField(help_text="What each automatic top-up charges.")
    credits = serializers.IntegerField(help_text="Credits each automatic top-up adds.")
    paused = serializers.BooleanField(help_text="A charge failed (or the daily limit was reached): PATCH paused=false.")
    paused_reason = serializers.CharField()
    paused_at = serializers.DateTimeField(allow_null=True)
    card = CardSerializer(allow_null=True, help_text="The saved card; null: none (POST .../card to add one).")
    card_provider = serializers.CharField(help_text="Where cards are saved on this server: stripe, demo, or ''.")
    unavailable_reason = serializers.CharField(help_text="Why no card can be saved here, when card_provider is ''.")
    max_per_day = serializers.IntegerField(help_text="Automatic top-ups allowed in 24 hours; the next one pauses.")
    last_attempt = LastAttemptSerializer(allow_null=True)


def _usd(credits: int) -> str:
    return f"{credits_to_usd(credits):.2f}"


def autotopup_data(setting: AutoTopup | None) -> dict:
    provider, why_not = autotopup_provider()
    threshold = setting.threshold if setting else DEFAULT_THRESHOLD_CREDITS
    cents = setting.amount_cents if setting else DEFAULT_AMOUNT_CENTS
    attempt = setting.last_attempt if setting else None
    return {
        "enabled": bool(setting and setting.enabled and setting.has_card),
        "threshold": threshold,
        "threshold_usd": _usd(threshold),
        "amount_usd": f"{Decimal(cents) / 100:.2f}",
        "credits": credits_for_cents(cents),
        "paused": bool(setting and setting.paused),
        "paused_reason": setting.paused_reason if setting else "",
        "paused_at": setting.paused_at if setting else None,
        "card": {"brand": setting.card_brand, "last4": setting.card_last4} if setting and setting.has_card else None,
        "card_provider": provider,
        "unavailable_reason": why_not,
        "max_per_day": settings.AUTOTOPUP_MAX_PER_DAY,
        "last_attempt": {
            "id": attempt.pk,
            "status": attempt.status,
            "amount_usd": attempt.amount_usd,
            "created_at": attempt.created_at,
        }
        if attempt
        else None,
    }


def _current(request: Request) -> Response:
    return Response(AutoTopupOutputSerializer(autotopup_data(autotopup_for_user(user=request.user))).data)


def _refused(exc: Exception) -> ApiError:
    if isinstance(exc, TopupAmountInvalid):
        return ApiError(code="invalid_amount", message=str(exc), extra={"field": "amount_usd"})
    if isinstance(exc, TopupWalletFrozen):
        return ApiError(code="wallet_frozen", message=str(exc), status_code=403)
    if isinstance(exc, AutoTopupNoCard):
        return ApiError(code="card_required", message=str(exc), status_code=409)
    if isinstance(exc, TopupsUnavailable):
        return ApiError(code="topups_unavailable", message=str(exc), status_code=503)
    if isinstance(exc, stripe_client.StripeUnavailable):
        return ApiError(
            code="payment_provider_unavailable",
            message="Stripe could not be reached just now; nothing was saved or charged. Try again shortly.",
            status_code=503,
        )
    if isinstance(exc, ValueError):
        return ApiError(code="invalid_threshold", message=str(exc), extra={"field": "threshold_usd"})
    raise exc


_REFUSALS = {
    400: OpenApiResponse(
        description="invalid_threshold, invalid_amount (with `field`): as the wallet page's form refuses them "
        "(threshold above $0 up to $1,000 in whole cents; amount $1 to $1,000); invalid_request: fields wrong"
    ),
    403: OpenApiResponse(description="wallet_frozen: a frozen wallet's automatic top-up can't be changed"),
    409: OpenApiResponse(description="card_required: turning it on needs a saved card (POST .../card first)"),
    429: OpenApiResponse(description="rate_limited: counted with top-ups started (RATE_TOPUP)"),
    503: OpenApiResponse(description="topups_unavailable, payment_provider_unavailable; nothing was charged"),
}


class AutoTopupDetailApi(APIView):
    @extend_schema(
        responses={200: AutoTopupOutputSerializer},
        description="The wallet's automatic top-up: threshold, amount, on or off, pause, saved card.",
    )
    def get(self, request: Request) -> Response:
        return _current(request)


class AutoTopupUpdateApi(APIView):
    class InputSerializer(serializers.Serializer):
        enabled = serializers.BooleanField(help_text="On needs a saved card.")
        threshold_usd = serializers.CharField(
            max_length=20,
            allow_blank=True,
            help_text="US dollars: top up when the available balance falls below, e.g. 2 or 2.50.",
        )
        amount_usd = serializers.CharField(
            max_length=20, allow_blank=True, help_text="US dollars each top-up charges, $1 to $1,000, e.g. 10 or 12,50."
        )
        paused = serializers.BooleanField(
            required=False, help_text="false resumes after a pause (a charge may start at once); true is refused."
        )

    class PatchInputSerializer(InputSerializer):
        def get_fields(self) -> dict:
            fields = super().get_fields()
            for field in fields.values():
                field.required = False
            return fields

    def _save(self, request: Request, data: dict) -> Response:
        if data.get("paused") is True:
            raise ApiError(
                code="invalid_request",
                message="A pause comes from a failed charge; to stop automatic top-ups, set enabled to false.",
                extra={"field": "paused"},
            )
        try:
            if {"enabled", "threshold_usd", "amount_usd"} & data.keys():
                current = autotopup_data(autotopup_for_user(user=request.user))
                threshold, cents = autotopup_values(
                    threshold_usd=str(data.get("threshold_usd", current["threshold_usd"])),
                    amount_usd=str(data.get("amount_usd", current["amount_usd"])),
                )
                autotopup_settings_save(
                    user=request.user,
                    enabled=data.get("enabled", current["enabled"]),
                    threshold=threshold,
                    amount_cents=cents,
                )
            if data.get("paused") is False:
                autotopup_resume(user=request.user)
        except (ValueError, TopupsUnavailable) as exc:
            raise _refused(exc)
        return _current(request)

    @extend_schema(
        request=InputSerializer,
        responses={200: AutoTopupOutputSerializer, **_REFUSALS},
        description="Set all of it. Below the threshold once on, the first top-up starts at once.",
    )
    def put(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._save(request, dict(data.validated_data))

    @extend_schema(
        request=PatchInputSerializer,
        responses={200: AutoTopupOutputSerializer, **_REFUSALS},
        description="Change some of it; `paused: false` resumes after a pause.",
    )
    def patch(self, request: Request) -> Response:
        data = self.PatchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._save(request, dict(data.validated_data))


class AutoTopupDeleteApi(APIView):
    @extend_schema(
        responses={204: None, 429: _REFUSALS[429]},
        description="Turn automatic top-ups off and forget the saved card (detached at Stripe). "
        "The threshold and amount are kept.",
    )
    def delete(self, request: Request) -> Response:
        try:
            autotopup_card_remove(user=request.user)
        except stripe_client.StripeUnavailable:
            pass  # forgotten here either way: its id is gone, so it can't be charged (logged)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _WritesThrottled(APIView):
    """Writes count with top-ups started: each may call Stripe or start a charge."""

    throttle_classes = [TopupThrottle]

    def get_throttles(self) -> list:
        return [] if self.request.method in ("GET", "HEAD", "OPTIONS") else super().get_throttles()


# GET, PUT, PATCH and DELETE share one URL, so one view joins the operations.
class AutoTopupApi(_WritesThrottled, AutoTopupDetailApi, AutoTopupUpdateApi, AutoTopupDeleteApi):
    pass


class AutoTopupCardApi(_WritesThrottled):
    """Save a card: a Stripe Checkout Session in setup mode to open in a browser, or on a
    server without Stripe (never in production) the demo card."""

    class InputSerializer(serializers.Serializer):
        demo = serializers.ChoiceField(
            choices=["card", "declines"],
            required=False,
            help_text="Only on a server without Stripe: save the demo card, or the demo card that is always declined.",
        )

    class OutputSerializer(serializers.Serializer):
        setup_url = serializers.URLField(
            allow_null=True,
            help_text="Stripe: open it in a browser to save the card; the card shows here once Stripe confirms. "
            "null for the demo card, saved at once.",
        )
        auto_topup = AutoTopupOutputSerializer()

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OpenApiResponse(OutputSerializer, description="A Stripe card set-up was opened: follow setup_url"),
            200: OpenApiResponse(OutputSerializer, description="The demo card was saved"),
            400: OpenApiResponse(description="invalid_request: `demo` given on a Stripe server, or missing without"),
            403: _REFUSALS[403],
            429: _REFUSALS[429],
            503: _REFUSALS[503],
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demo = data.validated_data.get("demo", "")
        provider, why_not = autotopup_provider()
        if not provider:
            raise ApiError(code="topups_unavailable", message=why_not, status_code=503)
        if (provider == AutoTopup.Provider.DEMO) != bool(demo):
            raise ApiError(
                code="invalid_request",
                message="This server saves cards through Stripe: leave out `demo`."
                if demo
                else "This server has no card checkout: send demo=card or demo=declines (no card is charged).",
                extra={"field": "demo"},
            )
        url = None
        try:
            if demo:
                autotopup_demo_card_save(user=request.user, declines=demo == "declines")
            else:
                url = autotopup_card_setup_start(user=request.user, base_url=request.build_absolute_uri("/"))
        except (TopupsUnavailable, stripe_client.StripeUnavailable) as exc:
            raise _refused(exc)
        body = {"setup_url": url, "auto_topup": autotopup_data(autotopup_for_user(user=request.user))}
        return Response(self.OutputSerializer(body).data, status=201 if url else 200)
