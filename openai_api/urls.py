from __future__ import annotations

from django.urls import path

from openai_api import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="v1_chat_completions"),
    path("models", views.models, name="v1_models"),
]
