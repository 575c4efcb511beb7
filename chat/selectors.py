"""Reads for chat. Every lookup of a user's object goes through a `..._for_user` helper,
so another user's id is a 404, never a 403 that confirms it exists."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404

from chat.models import Conversation, Message, ModelSpec


def models_catalog() -> QuerySet[ModelSpec]:
    """Every model the operator has enabled, available or not (the dropdown greys those out).

    The demo model is not in production's catalog at all, even if its row was kept.
    """
    models = ModelSpec.objects.filter(enabled=True)
    if not settings.DEMO_ALLOWED:
        models = models.exclude(is_demo=True)
    return models.order_by("sort_order", "name")


def conversations_for_user(*, user: AbstractBaseUser, query: str = "") -> QuerySet[Conversation]:
    """Newest first, each with `cost_total` (credits of every reply it paid for, replaced
    ones too) and `running` (a reply still being written). `query` keeps those whose title
    or text (as the conversation reads now) contains it, in any case."""
    conversations = Conversation.objects.filter(user=user)
    if query:
        matching = Message.objects.filter(
            conversation=OuterRef("pk"), superseded_at__isnull=True, content__icontains=query
        )
        conversations = conversations.filter(Q(title__icontains=query) | Exists(matching))
    costs = (
        Message.objects.filter(conversation=OuterRef("pk"), cost__isnull=False)
        .values("conversation")
        .annotate(total=Sum("cost"))
        .values("total")
    )
    running = Message.objects.filter(
        conversation=OuterRef("pk"), status__in=[Message.Status.QUEUED, Message.Status.STREAMING]
    )
    return conversations.annotate(
        cost_total=Coalesce(Subquery(costs, output_field=IntegerField()), Value(0)),
        running=Exists(running),
    ).order_by("-updated_at", "-id")


def conversation_cost(*, conversation: Conversation) -> int:
    """Credits every reply of the conversation was charged, replaced replies included."""
    return conversation.messages.aggregate(total=Sum("cost"))["total"] or 0


def match_snippet(*, conversation: Conversation, query: str, chars: int = 40) -> str:
    """Where `query` first occurs in the conversation's text, with a little on either side."""
    message = conversation.messages.filter(superseded_at__isnull=True, content__icontains=query).order_by("id").first()
    if message is None:
        return ""
    text = " ".join(message.content.split())
    at = text.lower().find(query.lower())
    if at < 0:
        return text[: 2 * chars]
    start, end = max(0, at - chars), min(len(text), at + len(query) + chars)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def get_conversation_for_user(*, user: AbstractBaseUser, conversation_id: int) -> Conversation:
    try:
        return Conversation.objects.get(pk=conversation_id, user=user)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such conversation.")


def get_message_for_user(*, user: AbstractBaseUser, message_id: int) -> Message:
    try:
        return Message.objects.select_related("conversation", "model").get(pk=message_id, conversation__user=user)
    except (Message.DoesNotExist, ValueError, TypeError):
        raise Http404("No such message.")


def conversation_messages(*, conversation: Conversation) -> QuerySet[Message]:
    """The conversation as it reads now: messages replaced by an edit or a regenerated reply left out."""
    return conversation.messages.filter(superseded_at__isnull=True).select_related("model").order_by("id")


def messages_running(*, conversation: Conversation) -> bool:
    return conversation.messages.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING]).exists()


def replies_in_flight(*, user: AbstractBaseUser) -> int:
    """The user's replies queued or streaming, in every conversation."""
    return Message.objects.filter(
        conversation__user=user,
        role=Message.Role.ASSISTANT,
        status__in=[Message.Status.QUEUED, Message.Status.STREAMING],
    ).count()
