from __future__ import annotations

from django.urls import path

from wallet import api

urlpatterns = [
    path("wallet", api.WalletDetailApi.as_view(), name="api_wallet"),
    path("wallet/entries", api.WalletEntryListApi.as_view(), name="api_wallet_entries"),
]
