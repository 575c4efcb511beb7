from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict:
    balance = None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        from wallet.selectors import wallet_summary

        balance = wallet_summary(user=user)
    return {
        "header_wallet": balance,
        "stripe_demo": settings.DEMO_ALLOWED and settings.TOPUPS_ENABLED and not settings.STRIPE_SECRET_KEY,
        "credits_per_usd": settings.CREDITS_PER_USD,
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "support_email": settings.SUPPORT_EMAIL,
    }


def user_display(user: object) -> str:
    """How allauth names a user in messages ("Successfully signed in as ..."): the email."""
    return getattr(user, "email", "") or str(user)
