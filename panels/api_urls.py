from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("wallet.api_urls")),
    path("", include("chat.api_urls")),
]
