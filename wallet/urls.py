from __future__ import annotations

from django.urls import path

from wallet import views

urlpatterns = [
    path("", views.wallet, name="wallet"),
    path("export.csv", views.wallet_export, name="wallet_export"),
]
