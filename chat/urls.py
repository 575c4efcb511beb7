from __future__ import annotations

from django.urls import path

from chat import views

urlpatterns = [
    path("chat/", views.chat, name="chat"),
    path("chat/c/<int:conversation_id>/", views.chat, name="chat_conversation"),
    path("chat/m/<int:message_id>/", views.message_goto, name="message_goto"),
    path("pricing/", views.pricing, name="pricing"),
]
