from __future__ import annotations

from django.urls import path

from chat import api, revision_api, route_api

urlpatterns = [
    path("models", api.ModelListApi.as_view(), name="api_models"),
    path("conversations", api.ConversationsApi.as_view(), name="api_conversations"),
    path("conversations/<int:conversation_id>", api.ConversationApi.as_view(), name="api_conversation"),
    path(
        "conversations/<int:conversation_id>/export",
        api.ConversationExportApi.as_view(),
        name="api_conversation_export",
    ),
    path("conversations/<int:conversation_id>/messages", api.MessageSendApi.as_view(), name="api_message_send"),
    path("messages/<int:message_id>", api.MessageDetailApi.as_view(), name="api_message"),
    path("messages/<int:message_id>/stream", api.MessageStreamApi.as_view(), name="api_message_stream"),
    path("messages/<int:message_id>/cancel", api.MessageCancelApi.as_view(), name="api_message_cancel"),
    path("messages/<int:message_id>/retry", api.MessageRetryApi.as_view(), name="api_message_retry"),
    path(
        "messages/<int:message_id>/regenerate",
        revision_api.MessageRegenerateApi.as_view(),
        name="api_message_regenerate",
    ),
    path("messages/<int:message_id>/edit", revision_api.MessageEditApi.as_view(), name="api_message_edit"),
    path("messages/<int:message_id>/escalate", api.MessageEscalateApi.as_view(), name="api_message_escalate"),
    path("route", route_api.RouteCreateApi.as_view(), name="api_route"),
]
