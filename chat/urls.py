from __future__ import annotations

from django.urls import path

from chat import pricing_views, usage_views, views

urlpatterns = [
    path("chat/", views.chat, name="chat"),
    path("chat/c/<int:conversation_id>/", views.chat, name="chat_conversation"),
    path("chat/m/<int:message_id>/", views.message_goto, name="message_goto"),
    path("pricing/", pricing_views.pricing_page, name="pricing"),
    path("usage/", usage_views.usage, name="usage"),
]
