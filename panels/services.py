"""Closing an account: what is erased, what the ledger keeps."""

from __future__ import annotations

import logging
import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

log = logging.getLogger(__name__)


# A closed account's email becomes deleted-<random>@deleted.invalid (RFC 2606: never routable).
DELETED_EMAIL_DOMAIN = "deleted.invalid"


class AccountBusy(Exception):
    """A reply is still being written: deleting now would leave its hold to the sweep."""


def user_delete(*, user: AbstractBaseUser) -> dict[str, int]:
    """Close an account: erase its chat content, keep the ledger (amounts and references).

    Erased: every conversation with its messages and their attached images, the reply
    streams still in Redis, the prompts and replies kept for the OpenAI-compatible API,
    API keys, email addresses and the name, and the buyer's details in stored Stripe events
    (wallet/stripe_privacy.py keeps their ids and amounts). Kept: ledger entries, holds and top-ups,
    which hold amounts and references (`message:<id>`, `topup:<id>`) but no text, so
    every balance can still be rebuilt; the user row stays, anonymised and unusable,
    because they point at it. The balance is forfeited. Raises AccountBusy while a
    reply is running. Returns what was erased, by kind.
    """
    from allauth.account.models import EmailAddress

    from chat.models import Conversation, Message, SendKey
    from chat.streams import stream_key
    from openai_api.models import ApiCall
    from wallet.autotopups import autotopup_forget
    from wallet.models import Account
    from wallet.stripe_privacy import stripe_events_scrub

    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        # Sends lock their conversation: one in flight commits first (and is seen running
        # below), a later one finds its conversation gone.
        list(Conversation.objects.select_for_update().filter(user=user).values_list("pk", flat=True))
        messages = Message.objects.filter(conversation__user=user)
        running = messages.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING]).exists()
        if running or ApiCall.objects.filter(user=user, status=ApiCall.Status.STREAMING).exists():
            raise AccountBusy(
                "A reply is still being written. Stop it or wait for it to finish, then delete your account."
            )
        streams = [stream_key(m) for m in messages.filter(role=Message.Role.ASSISTANT).only("pk", "created_at")]
        erased = {
            "messages": messages.count(),
            "conversations": Conversation.objects.filter(user=user).count(),
        }
        SendKey.objects.filter(user=user).delete()
        Conversation.objects.filter(user=user).delete()  # messages and their attachments go with them
        erased["api_calls"] = ApiCall.objects.filter(user=user).update(prompt=None, reply="", response_body=None)
        EmailAddress.objects.filter(user=user).delete()
        account = Account.objects.filter(user=user).first()
        # Before the saved-card setting goes: it names the Stripe Customer of the events.
        erased["stripe_events"] = stripe_events_scrub(user=user)
        if account is not None:
            autotopup_forget(account=account)  # the saved card is detached once this commits
        user.api_keys.all().delete()
        anonymous = f"deleted-{uuid.uuid4().hex[:12]}"
        user.username = anonymous
        user.email = f"{anonymous}@{DELETED_EMAIL_DOMAIN}"
        user.first_name = user.last_name = ""
        user.is_active = False
        user.set_unusable_password()
        user.save()
        transaction.on_commit(lambda: _drop_streams(streams))
    return erased


def _drop_streams(keys: list[str]) -> None:
    """Reply streams expire within the hour anyway; drop them now (best effort)."""
    if not keys:
        return
    from panels.redis_client import get_redis

    try:
        client = get_redis()
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except Exception:  # Redis down: the streams' own expiry still removes them
        log.warning("could not drop reply streams of a deleted account", extra={"streams": len(keys)})
