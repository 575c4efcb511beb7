from __future__ import annotations

from django.conf import settings
from django.urls import path

from wallet import alert_views, autotopup_views, topup_views, views

urlpatterns = [
    path("", views.wallet, name="wallet"),
    path("export.csv", views.wallet_export, name="wallet_export"),
    path("alerts/", alert_views.balance_alert, name="wallet_alert"),
    path("auto-topup/", autotopup_views.autotopup_settings, name="autotopup"),
    path("auto-topup/card/", autotopup_views.autotopup_card, name="autotopup_card"),
    path("auto-topup/card/done/", autotopup_views.autotopup_card_done, name="autotopup_card_done"),
    path("auto-topup/card/remove/", autotopup_views.autotopup_card_delete, name="autotopup_card_remove"),
    path("auto-topup/resume/", autotopup_views.autotopup_resume_view, name="autotopup_resume"),
    path("topup/", topup_views.topup, name="topup"),
    path("topup/<int:topup_id>/done/", topup_views.topup_done, name="topup_done"),
]

if settings.DEMO_ALLOWED:
    # The demo checkout credits wallets without a payment: no such URL in production.
    urlpatterns.append(path("topup/<int:topup_id>/pay/", topup_views.topup_demo_checkout, name="topup_demo_pay"))
