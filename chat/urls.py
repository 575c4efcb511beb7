from __future__ import annotations

from django.urls import path

from chat import views

urlpatterns = [
    path("chat/", views.chat, name="chat"),
    path("pricing/", views.pricing, name="pricing"),
]
