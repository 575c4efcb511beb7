"""Usage that outlives its conversation: a deleted conversation's billed replies are
copied to `DeletedReplyUsage` first, so the usage page's "Spent" keeps agreeing with
the wallet's ledger (which keeps every charge)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chat.models import Conversation, DeletedReplyUsage, Message

BILLED = (Message.Status.DONE, Message.Status.CANCELLED)


def usage_keep_for_deletion(*, conversation: Conversation) -> int:
    """Copy the conversation's billed replies; call it inside the deleting transaction."""
    replies = Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT, status__in=BILLED, cost__isnull=False
    )
    rows = [
        DeletedReplyUsage(
            user_id=conversation.user_id,
            model_id=reply.model_id,
            requested_model=reply.requested_model,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost=reply.cost,
            created_at=reply.created_at,
            message_id=reply.pk,
        )
        for reply in replies
    ]
    DeletedReplyUsage.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def deleted_reply_usage(*, user: AbstractBaseUser, since: dt.datetime) -> QuerySet[DeletedReplyUsage]:
    return DeletedReplyUsage.objects.filter(user=user, created_at__gte=since)
