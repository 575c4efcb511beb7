from __future__ import annotations

from django.urls import path

from wallet import topup_views, views

urlpatterns = [
    path("", views.wallet, name="wallet"),
    path("export.csv", views.wallet_export, name="wallet_export"),
    path("topup/", topup_views.topup, name="topup"),
    path("topup/<int:topup_id>/pay/", topup_views.topup_demo_pay, name="topup_demo_pay"),
    path("topup/<int:topup_id>/done/", topup_views.topup_done, name="topup_done"),
]
