"""Top-up pages (choose an amount, demo checkout, done) and POST /api/v1/topups."""

from __future__ import annotations

import logging

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from panels.api_errors import ApiError
from panels.ratelimit import UserRateLimit
from wallet import stripe_client
from wallet.models import Topup
from wallet.selectors import wallet_summary
from wallet.services import credits_for_cents
from wallet.stripe_events import stripe_session_fulfil
from wallet.topups import (
    PACKS_USD,
    TopupAmountInvalid,
    TopupMismatch,
    TopupsUnavailable,
    TopupWalletFrozen,
    demo_checkout_enabled,
    topup_amount_cents,
    topup_cancel,
    topup_create,
    topup_demo_pay,
    topup_fetch_receipt,
    topups_expire_stale,
    topups_unavailable_reason,
)

log = logging.getLogger(__name__)


class TopupThrottle(UserRateLimit):
    """Top-ups started per user (settings: REST_FRAMEWORK throttle scope "topup").

    Shared by the page and the API: each start may open a Stripe Checkout Session.
    """

    scope = "topup"


def _throttle_wait(request: HttpRequest) -> int | None:
    """Seconds to wait when the user started too many top-ups, else None (and counts this one)."""
    throttle = TopupThrottle()
    if throttle.allow_request(request, None):
        return None
    return max(1, round(throttle.wait() or 1))


def _topup_for_user(request: HttpRequest, topup_id: int) -> Topup:
    """Another user's top-up is a 404, like one that does not exist."""
    return get_object_or_404(Topup, pk=topup_id, user=request.user)


class TopupForm(forms.Form):
    amount_usd = forms.CharField(
        label="Custom amount (USD)",
        max_length=20,
        error_messages={"required": "Enter an amount in US dollars, for example 10 or 12.50."},
        help_text="From $1 to $1,000, in whole cents. A decimal comma works too: 2,50 is $2.50.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "12.50"}),
    )

    def clean_amount_usd(self) -> int:
        try:
            return topup_amount_cents(self.cleaned_data["amount_usd"])
        except TopupAmountInvalid as exc:
            raise forms.ValidationError(str(exc))


def _packs() -> list[dict[str, object]]:
    return [{"usd": usd, "credits": credits_for_cents(usd * 100)} for usd in PACKS_USD]


@login_required
@require_http_methods(["GET", "POST"])
def topup(request: HttpRequest) -> HttpResponse:
    form = TopupForm(request.POST or None)
    status = 200
    error = ""
    closed = topups_unavailable_reason()
    if request.method == "POST" and closed:
        status = 503
    elif request.method == "POST" and form.is_valid():
        wait = _throttle_wait(request)
        if wait is not None:
            error = f"You have started many top-ups in a short time. Please try again in {wait} seconds."
            status = 429
        else:
            try:
                created = topup_create(
                    user=request.user,
                    amount_cents=form.cleaned_data["amount_usd"],
                    base_url=request.build_absolute_uri("/"),
                )
            except stripe_client.StripeUnavailable:
                error = "Stripe could not open a checkout just now, and nothing was charged. Please try again shortly."
                status = 503
            except TopupsUnavailable as exc:
                error = str(exc)
                status = 403 if isinstance(exc, TopupWalletFrozen) else 503
            else:
                return HttpResponseRedirect(created.checkout_url)
    elif request.method == "POST":
        status = 400
    cancelled = None
    if request.method == "GET" and request.GET.get("cancelled", "").isdigit():
        # Back from checkout without paying (Stripe's cancel_url, the demo's Cancel).
        cancelled = Topup.objects.filter(pk=int(request.GET["cancelled"]), user=request.user).first()
        if cancelled is not None:
            try:
                cancelled = topup_cancel(topup=cancelled)
            except stripe_client.StripeUnavailable:
                log.warning("could not expire a cancelled checkout", extra={"topup_id": cancelled.pk})
    return render(
        request,
        "wallet/topup.html",
        {
            "form": form,
            "packs": _packs(),
            "error": error,
            "closed": closed,
            "cancelled": cancelled,
            "summary": wallet_summary(user=request.user),
            "stripe_enabled": stripe_client.stripe_enabled(),
            "demo_checkout": demo_checkout_enabled(),
            "credits_per_usd": settings.CREDITS_PER_USD,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def topup_demo_checkout(request: HttpRequest, topup_id: int) -> HttpResponse:
    """The demo checkout: no card, no Stripe; paying runs the same fulfilment as Stripe's."""
    item = _topup_for_user(request, topup_id)
    if item.provider != Topup.Provider.DEMO or not demo_checkout_enabled():
        raise Http404("No demo checkout for this top-up.")
    topups_expire_stale(user=request.user)
    item.refresh_from_db()
    if item.credited_at is not None or item.status != Topup.Status.CREATED:
        # Paid, or cancelled or expired: like an expired Stripe session, it can't be paid.
        return redirect("topup_done", topup_id=item.pk)
    if request.method == "POST":
        try:
            topup_demo_pay(topup=item)
        except TopupsUnavailable:
            raise Http404("No demo checkout for this top-up.")
        return redirect("topup_done", topup_id=item.pk)
    return render(request, "wallet/topup_demo.html", {"topup": item})


@login_required
@require_http_methods(["GET"])
def topup_done(request: HttpRequest, topup_id: int) -> HttpResponse:
    """Where Stripe sends the buyer back: confirm with Stripe and credit if paid.

    The webhook does the same; whichever comes first credits the wallet, once.
    """
    topups_expire_stale(user=request.user)
    item = _topup_for_user(request, topup_id)
    problem = ""
    if item.provider == Topup.Provider.STRIPE and item.credited_at is None and item.checkout_session_id:
        try:
            # No transaction is open across this call (ATOMIC_REQUESTS is off).
            session = stripe_client.checkout_session_retrieve(session_id=item.checkout_session_id)
        except stripe_client.StripeUnavailable:
            problem = "We could not reach Stripe to confirm the payment. Your credits arrive as soon as it confirms."
        else:
            if session.payment_status == "paid" or session.status == "complete":
                # Paid: credit. Complete but unpaid (a bank debit clearing): mark it processing.
                try:
                    stripe_session_fulfil(session=session)
                except TopupMismatch:
                    log.error("paid session does not match its top-up", extra={"topup_id": item.pk})
                    problem = (
                        "This payment does not match the top-up, so nothing was added. "
                        f"Please write to {settings.SUPPORT_EMAIL}."
                    )
    item.refresh_from_db()
    topup_fetch_receipt(topup=item)
    return render(
        request,
        "wallet/topup_done.html",
        {"topup": item, "summary": wallet_summary(user=request.user), "problem": problem},
    )


class TopupCreateApi(APIView):
    """Start a top-up: returns the checkout URL to send the buyer to."""

    throttle_classes = [TopupThrottle]

    class InputSerializer(serializers.Serializer):
        amount_usd = serializers.CharField(help_text="US dollars, $1 to $1,000, at most two decimals.")

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        checkout_url = serializers.URLField()
        amount_usd = serializers.CharField()
        credits = serializers.IntegerField()
        status = serializers.CharField()
        provider = serializers.CharField()

    serializer_class = InputSerializer

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(description="The amount is missing, outside $1 to $1,000, or has fractions of a cent"),
            403: OpenApiResponse(description="wallet_frozen: a frozen wallet takes no top-ups"),
            429: OpenApiResponse(description="Too many top-ups started; try again shortly"),
            503: OpenApiResponse(
                description="payment_provider_unavailable: Stripe could not open a checkout; "
                "topups_unavailable: top-ups are turned off on this server. Nothing was charged."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        if closed := topups_unavailable_reason():
            raise ApiError(code="topups_unavailable", message=closed, status_code=503)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        raw = request.data.get("amount_usd")
        # A JSON number is taken as the number it is; text is read as typed (decimal comma...).
        typed = (
            raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else data.validated_data["amount_usd"]
        )
        try:
            cents = topup_amount_cents(typed)
        except TopupAmountInvalid as exc:
            raise ApiError(code="invalid_amount", message=str(exc), extra={"field": "amount_usd"})
        try:
            created = topup_create(user=request.user, amount_cents=cents, base_url=request.build_absolute_uri("/"))
        except stripe_client.StripeUnavailable:
            raise ApiError(
                code="payment_provider_unavailable",
                message="Stripe could not open a checkout just now; nothing was charged. Try again shortly.",
                status_code=503,
            )
        except TopupWalletFrozen as exc:
            raise ApiError(code="wallet_frozen", message=str(exc), status_code=403)
        except TopupsUnavailable as exc:
            raise ApiError(code="topups_unavailable", message=str(exc), status_code=503)
        out = {
            "id": created.pk,
            "checkout_url": created.checkout_url,
            "amount_usd": created.amount_usd,
            "credits": created.credits,
            "status": created.status,
            "provider": created.provider,
        }
        return Response(self.OutputSerializer(out).data, status=201)
