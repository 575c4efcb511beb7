"""The wallet page's low-balance alert form."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from panels.money import usd_text
from wallet.alerts import balance_alert_set
from wallet.services import wallet_for_user

MAX_THRESHOLD_USD = Decimal(1000)


def threshold_credits(text: str) -> int | None:
    """'5' or '2.50' (US dollars) -> credits; '' -> None (off). ValueError with a message."""
    text = text.strip().removeprefix("$").strip()
    if not text:
        return None
    if "," in text:
        raise ValueError("Write the amount with a dot for cents, for example 2.50.")
    try:
        usd = Decimal(text)
    except InvalidOperation:
        raise ValueError("Enter an amount in US dollars, for example 5 or 2.50.") from None
    if not usd.is_finite() or usd <= 0 or usd.as_tuple().exponent < -2:
        raise ValueError("Enter an amount above $0 in whole cents, for example 2.50.")
    if usd > MAX_THRESHOLD_USD:
        raise ValueError(f"The threshold can be at most {usd_text(MAX_THRESHOLD_USD)}.")
    return int(usd * settings.CREDITS_PER_USD)


@login_required
@require_POST
def balance_alert(request: HttpRequest) -> HttpResponse:
    try:
        threshold = threshold_credits(request.POST.get("threshold_usd", ""))
    except ValueError as exc:
        messages.error(request, f"Low-balance email not changed: {exc}")
        return redirect("wallet")
    balance_alert_set(account=wallet_for_user(user=request.user), threshold=threshold)
    if threshold is None:
        messages.success(request, "Low-balance email turned off.")
    else:
        messages.success(
            request,
            f"We will email {request.user.email} once when your available balance falls below "
            f"{usd_text(Decimal(threshold) / settings.CREDITS_PER_USD)}.",
        )
    return redirect("wallet")
