from __future__ import annotations

from django.urls import include, path

from panels.api import ApiKeyListApi

urlpatterns = [
    path("keys", ApiKeyListApi.as_view(), name="api_keys"),
    path("", include("wallet.api_urls")),
    path("", include("chat.api_urls")),
]
