"""The wallet page's automatic top-up forms: settings, card (Stripe or demo), resume."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from panels.money import usd_text
from wallet import stripe_client
from wallet.alert_views import threshold_credits
from wallet.autotopups import (
    autotopup_card_remove,
    autotopup_card_setup_complete,
    autotopup_card_setup_start,
    autotopup_demo_card_save,
    autotopup_for_user,
    autotopup_resume,
    autotopup_settings_save,
)
from wallet.topups import TopupAmountInvalid, TopupsUnavailable, topup_amount_cents

log = logging.getLogger(__name__)


def _back() -> HttpResponse:
    response = redirect("wallet")
    response["Location"] += "#auto-topup"
    return response


def autotopup_values(*, threshold_usd: str, amount_usd: str) -> tuple[int, int]:
    """The threshold and amount as typed (US dollars), read and checked as the wallet page's
    form and the API both take them: (threshold in credits, amount in cents).

    Raises ValueError (TopupAmountInvalid for the amount) with a message for the person.
    """
    threshold = threshold_credits(threshold_usd)
    if threshold is None:
        raise ValueError("Enter the balance, in US dollars, below which to top up, for example 2.")
    return threshold, topup_amount_cents(amount_usd)


@login_required
@require_POST
def autotopup_settings(request: HttpRequest) -> HttpResponse:
    enabled = request.POST.get("enabled") == "on"
    try:
        threshold, amount_cents = autotopup_values(
            threshold_usd=request.POST.get("threshold_usd", ""), amount_usd=request.POST.get("amount_usd", "")
        )
        setting = autotopup_settings_save(
            user=request.user, enabled=enabled, threshold=threshold, amount_cents=amount_cents
        )
    except (ValueError, TopupAmountInvalid, TopupsUnavailable) as exc:
        messages.error(request, f"Automatic top-up not changed: {exc}")
        return _back()
    below = usd_text(Decimal(setting.threshold) / settings.CREDITS_PER_USD)
    amount = usd_text(Decimal(setting.amount_cents) / 100)
    if setting.enabled:
        messages.success(
            request,
            f"Automatic top-up on: when your available balance falls below {below}, "
            f"we charge your saved card {amount}.",
        )
    else:
        messages.success(request, f"Automatic top-up saved and off ({amount} below {below}).")
    return _back()


@login_required
@require_POST
def autotopup_card(request: HttpRequest) -> HttpResponse:
    """Add or replace the card: Stripe Checkout in setup mode, or the demo card."""
    demo = request.POST.get("demo_card", "")
    try:
        if demo:
            autotopup_demo_card_save(user=request.user, declines=demo == "declines")
        else:
            return redirect(autotopup_card_setup_start(user=request.user, base_url=request.build_absolute_uri("/")))
    except TopupsUnavailable as exc:
        messages.error(request, str(exc))
    except stripe_client.StripeUnavailable:
        messages.error(request, "We could not reach Stripe to add a card. Nothing was saved or charged; try again.")
    else:
        kind = "the demo declining card" if demo == "declines" else "the demo card"
        messages.success(request, f"Saved {kind} (demo — no card is charged).")
    return _back()


@login_required
@require_GET
def autotopup_card_done(request: HttpRequest) -> HttpResponse:
    """Where Stripe sends the user back from saving a card; the webhook does the same."""
    setting = autotopup_for_user(user=request.user)
    session_id = request.GET.get("session_id", "")
    if setting is None or not session_id or session_id != setting.setup_session_id:
        messages.error(request, "That card set-up is not this account's latest one; nothing was changed.")
        return _back()
    try:
        session = stripe_client.setup_session_retrieve(session_id=session_id)
        autotopup_card_setup_complete(session=session)
    except stripe_client.StripeUnavailable:
        messages.error(request, "We could not reach Stripe to confirm the card. It appears here once Stripe confirms.")
        return _back()
    setting.refresh_from_db()
    if setting.has_card and setting.setup_session_id == session_id:
        messages.success(request, f"Card saved: {setting.card_brand} ending {setting.card_last4}.")
    else:
        messages.error(request, "The card was not saved. Nothing was charged.")
    return _back()


@login_required
@require_POST
def autotopup_card_delete(request: HttpRequest) -> HttpResponse:
    try:
        autotopup_card_remove(user=request.user)
    except stripe_client.StripeUnavailable:
        pass  # forgotten here either way; logged
    messages.success(request, "Card removed, and automatic top-up turned off.")
    return _back()


@login_required
@require_POST
def autotopup_resume_view(request: HttpRequest) -> HttpResponse:
    try:
        autotopup_resume(user=request.user)
    except TopupsUnavailable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Automatic top-up resumed.")
    return _back()
