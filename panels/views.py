from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat.pricing_views import DEFAULTS, reference_rows
from chat.selectors import models_catalog
from openai_api.selectors import key_usage
from panels.health import health_report
from panels.models import ApiKey
from panels.services import AccountBusy, user_delete
from wallet.selectors import wallet_summary


def home(request: HttpRequest) -> HttpResponse:
    models = list(models_catalog())
    return render(request, "home.html", {"models": models, "reference": reference_rows(models), "mix": DEFAULTS})


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    ok, body = health_report()
    return JsonResponse(body, status=200 if ok else 503)


def _account_page(
    request: HttpRequest, *, new_key: str | None = None, key_error: str = "", status: int = 200
) -> HttpResponse:
    keys = [(key, key_usage(api_key=key)) for key in request.user.api_keys.all()]
    return render(
        request,
        "account/profile.html",
        {"api_keys": keys, "new_key": new_key, "key_error": key_error, "periods": ApiKey.LimitPeriod.choices},
        status=status,
    )


def _limit_fields(data) -> dict:
    """Spend limit (entered in USD, kept in credits), its period, and an expiry in days."""
    fields: dict = {}
    raw = data.get("limit_usd", "").strip()
    try:
        usd = Decimal(raw) if raw else None
    except InvalidOperation:
        raise ValueError("The spend limit must be an amount in dollars, e.g. 5 or 0.50.") from None
    if usd is not None and (not usd.is_finite() or usd < 0 or usd > 100_000):
        raise ValueError("The spend limit must be between $0 and $100,000.")
    fields["spend_limit"] = None if usd is None else int(usd * settings.CREDITS_PER_USD)
    period = data.get("limit_period", ApiKey.LimitPeriod.TOTAL)
    if period not in ApiKey.LimitPeriod.values:
        raise ValueError("Pick a limit period: per day, per month or in total.")
    fields["limit_period"] = period
    days = data.get("expires_days", "").strip()
    if days:
        if not days.isdigit() or not 1 <= int(days) <= 3650:
            raise ValueError("The expiry must be a whole number of days from 1 to 3650.")
        fields["expires_at"] = timezone.now() + dt.timedelta(days=int(days))
    return fields


# The new key rides to its owner's browser in a short-lived signed cookie for the
# redirect after the POST, and is cleared when the page shows it: it is never written to
# the session table or any other server-side store.
NEW_KEY_COOKIE = "panels_new_key"
NEW_KEY_COOKIE_PATH = "/accounts/profile/"
NEW_KEY_MAX_AGE = 120


@login_required
@never_cache
def account(request: HttpRequest) -> HttpResponse:
    new_key = request.get_signed_cookie(
        NEW_KEY_COOKIE, default=None, salt=f"apikey:{request.user.pk}", max_age=NEW_KEY_MAX_AGE
    )
    response = _account_page(request, new_key=new_key)
    if NEW_KEY_COOKIE in request.COOKIES:
        response.delete_cookie(NEW_KEY_COOKIE, path=NEW_KEY_COOKIE_PATH)
    return response


@login_required
@require_POST
@never_cache
def apikey_create(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()[:100]
    if "\x00" in name:
        # PostgreSQL can't store NUL in text: refused here rather than a 500 at the insert.
        return _account_page(request, key_error="A key name may not contain a NUL character.", status=400)
    try:
        fields = _limit_fields(request.POST)
    except ValueError as exc:
        return _account_page(request, key_error=str(exc), status=400)
    _, secret = ApiKey.issue(user=request.user, name=name, **fields)
    # Post/redirect/get: reloading the page afterwards makes no second key.
    response = redirect("account_profile")
    response.set_signed_cookie(
        NEW_KEY_COOKIE,
        secret,
        salt=f"apikey:{request.user.pk}",
        max_age=NEW_KEY_MAX_AGE,
        path=NEW_KEY_COOKIE_PATH,
        httponly=True,
        secure=request.is_secure(),
        samesite="Strict",
    )
    return response


@login_required
@require_POST
def apikey_limit(request: HttpRequest, prefix: str) -> HttpResponse:
    key = get_object_or_404(ApiKey, user=request.user, prefix=prefix)
    try:
        fields = _limit_fields(request.POST)
    except ValueError as exc:
        return _account_page(request, key_error=str(exc), status=400)
    fields.pop("expires_at", None)  # an expiry is set when the key is made
    ApiKey.objects.filter(pk=key.pk).update(**fields)
    messages.success(request, f"API key pnl_{key.prefix}_…: limit set to {ApiKey(**fields).limit_label}.")
    return redirect("account_profile")


@login_required
@require_http_methods(["GET", "POST"])
def apikey_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    """GET asks for confirmation; POST revokes."""
    key = get_object_or_404(ApiKey, user=request.user, prefix=prefix)
    if request.method == "GET":
        return render(request, "account/apikey_revoke.html", {"key": key})
    key.revoke()
    messages.success(request, f"API key pnl_{key.prefix}_… revoked: it no longer works.")
    return redirect("account_profile")


def _delete_page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    return render(
        request,
        "account/delete.html",
        {"error": error, "summary": wallet_summary(user=request.user)},
        status=status,
    )


@login_required
@never_cache
def account_delete(request: HttpRequest) -> HttpResponse:
    """Erase the account's chat content and close it, after the password is confirmed."""
    if request.method != "POST":
        return _delete_page(request)
    if not request.user.check_password(request.POST.get("password", "")):
        return _delete_page(request, error="That is not your password. Nothing was deleted.", status=400)
    user = request.user
    try:
        user_delete(user=user)
    except AccountBusy as exc:
        return _delete_page(request, error=str(exc), status=409)
    logout(request)
    messages.success(request, "Your account has been deleted, and your conversations with it.")
    return redirect("home")
