from __future__ import annotations

from django.urls import path

from wallet import api, autotopup_api, topup_views, webhooks

urlpatterns = [
    path("wallet", api.WalletDetailApi.as_view(), name="api_wallet"),
    path("wallet/entries", api.WalletEntryListApi.as_view(), name="api_wallet_entries"),
    path("wallet/auto-topup", autotopup_api.AutoTopupApi.as_view(), name="api_autotopup"),
    path("wallet/auto-topup/card", autotopup_api.AutoTopupCardApi.as_view(), name="api_autotopup_card"),
    path("topups", topup_views.TopupCreateApi.as_view(), name="api_topups"),
    path("stripe/webhook", webhooks.stripe_webhook, name="api_stripe_webhook"),
]
