from __future__ import annotations

from django.urls import path

from wallet import api, topup_views, webhooks

urlpatterns = [
    path("wallet", api.WalletDetailApi.as_view(), name="api_wallet"),
    path("wallet/entries", api.WalletEntryListApi.as_view(), name="api_wallet_entries"),
    path("topups", topup_views.TopupCreateApi.as_view(), name="api_topups"),
    path("stripe/webhook", webhooks.stripe_webhook, name="api_stripe_webhook"),
]
