"""Chat requests: conversations, sending a message (hold, then queue), retry and
cancel. The worker that runs a reply is chat/worker.py.

Money rules: the hold is placed in the same transaction that stores the messages.
No transaction is open while a model is called.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from chat import providers, send_sql, streams
from chat.costs import reply_cost
from chat.errors import Conflict, Gone, InvalidMessage, ModelUnavailable, ServiceUnavailable, TooManyReplies
from chat.models import Conversation, Message, ModelSpec
from chat.router import FLAGSHIP, RouteDecision
from chat.routing import auto_decide, flagship_model, route_for_message, tier_of
from chat.selectors import messages_running, replies_in_flight
from chat.send_keys import Remember, send_once
from chat.tokens import REPLY_PRIMING_TOKENS, model_message_tokens
from chat.usage_records import usage_keep_for_deletion
from chat.worker import RUNNING, announce_done, message_fail
from openai_api.key_spend import KeyInactive, acting_key, key_hold, key_spend_check
from wallet import ledger_sql
from wallet.errors import InsufficientCredits, WalletFrozen
from wallet.models import Account, Hold
from wallet.services import wallet_for_user, wallet_hold, wallet_void

log = logging.getLogger(__name__)

AUTO = "auto"
TITLE_CHARS = 60
MAX_ATTACHMENTS = 4
_IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")


# --- conversations ------------------------------------------------------------


SYSTEM_PROMPT_CHARS = 8_000
TEMPERATURE_MAX = Decimal(2)
_UNSET = object()


def _clean_settings(*, system_prompt: Any = _UNSET, temperature: Any = _UNSET) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if system_prompt is not _UNSET:
        prompt = (system_prompt or "").strip()
        if len(prompt) > SYSTEM_PROMPT_CHARS:
            raise InvalidMessage(
                f"The system prompt can be at most {SYSTEM_PROMPT_CHARS:,} characters.", code="invalid_request"
            )
        fields["system_prompt"] = prompt
    if temperature is not _UNSET:
        if temperature is not None:
            temperature = Decimal(str(temperature)).quantize(Decimal("0.01"))
            if not 0 <= temperature <= TEMPERATURE_MAX:
                raise InvalidMessage("The temperature must be between 0 and 2.", code="invalid_request")
        fields["temperature"] = temperature
    return fields


def conversation_create(
    *, user: AbstractBaseUser, title: str = "", system_prompt: str = "", temperature: Decimal | None = None
) -> Conversation:
    settings_ = _clean_settings(system_prompt=system_prompt, temperature=temperature)
    return Conversation.objects.create(user=user, title=title.strip()[:200], **settings_)


def _lock_conversation(pk: int) -> Conversation:
    """The conversation's row, locked for this transaction. One deleted by a concurrent
    request is a 404 (Gone), not a 500 from a missing row or a foreign key."""
    locked = Conversation.objects.select_for_update().filter(pk=pk).first()
    if locked is None:
        raise Gone("This conversation no longer exists; it was deleted.")
    return locked


def _lock_for_send(conversation: Conversation, *, user: AbstractBaseUser, title: str = "") -> tuple[Conversation, int]:
    """Start a send: lock the user's row, then the conversation's, and touch the conversation
    (`updated_at`, and `title` if it has none), in one statement. Returns the conversation as
    locked and the user's wallet id.

    The user's row (FOR NO KEY UPDATE: rows that refer to it can still be inserted) makes
    the user's sends take turns, so the cap on replies in flight is counted exactly without
    the wallet's row, which only the hold, the send's last statement, locks. Sends in one
    conversation take turns on its row, so each builds its context in order.
    """
    returning = (
        "RETURNING chat_conversation.title, chat_conversation.system_prompt,"
        " (SELECT w.id FROM wallet_account w WHERE w.user_id = chat_conversation.user_id)"
    )
    touch = "SET updated_at = %s, title = CASE WHEN title = '' THEN %s ELSE title END"
    now = timezone.now()
    if connection.vendor == "postgresql":
        sql = send_sql.lock_statement()
        params = [user.pk, now, title[:200], conversation.pk]
    else:  # SQLite: a write transaction holds the whole database already
        sql = f"UPDATE chat_conversation {touch} WHERE id = %s AND user_id = %s {returning}"
        params = [now, title[:200], conversation.pk, user.pk]
    # Prepared on PostgreSQL (planned once per connection, as the send's other statements).
    with ledger_sql.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise Gone("This conversation no longer exists; it was deleted.")
    conversation.title, conversation.system_prompt, wallet_id = row
    conversation.updated_at = now
    if wallet_id is None:  # a user's first reply: the wallet is made now
        wallet_id = wallet_for_user(user=user).pk
    return conversation, wallet_id


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    return conversation_update(conversation=conversation, title=title)


def conversation_update(
    *, conversation: Conversation, title: Any = _UNSET, system_prompt: Any = _UNSET, temperature: Any = _UNSET
) -> Conversation:
    """Rename, or set the system prompt and temperature the next replies are written with
    (a reply takes them when it starts)."""
    fields = _clean_settings(system_prompt=system_prompt, temperature=temperature)
    if title is not _UNSET:
        fields["title"] = title.strip()[:200]
    with transaction.atomic():
        locked = _lock_conversation(conversation.pk)
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=[*fields, "updated_at"])
    return locked


def conversation_delete(*, conversation: Conversation) -> None:
    """Deleting a conversation whose reply is still running would leave its hold to the sweep."""
    with transaction.atomic():
        locked = _lock_conversation(conversation.pk)
        if messages_running(conversation=locked):
            raise Conflict(
                "A reply in this conversation is still running; stop it or wait for it to finish, then delete.",
                code="reply_in_progress",
            )
        # The usage page keeps counting what these replies cost, as the ledger does.
        usage_keep_for_deletion(conversation=locked)
        locked.delete()


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


# --- sending --------------------------------------------------------------------


def _clean_attachments(attachments: list | None) -> list[dict]:
    """Images as `{"type": "image", "url": ...}`: a base64 data URL or an https URL."""
    if not attachments:
        return []
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise InvalidMessage(f"Attach at most {MAX_ATTACHMENTS} images.", code="invalid_attachments")
    cleaned = []
    for item in attachments:
        url = item if isinstance(item, str) else (item.get("url") if isinstance(item, dict) else None)
        if isinstance(item, dict) and item.get("type", "image") != "image":
            raise InvalidMessage("Only images can be attached.", code="invalid_attachments")
        if not isinstance(url, str) or not (_IMAGE_DATA_URL.match(url) or url.startswith("https://")):
            raise InvalidMessage(
                "Each attachment must be a PNG, JPEG, GIF or WebP image as a base64 data URL, or an https URL.",
                code="invalid_attachments",
            )
        cleaned.append({"type": "image", "url": url})
    return cleaned


def _history(conversation: Conversation) -> list[Message]:
    """What the model may see: the user's messages and the replies that produced text."""
    return [
        m
        for m in conversation.messages.filter(superseded_at__isnull=True).order_by("id")
        if m.role == Message.Role.USER or (m.status in (Message.Status.DONE, Message.Status.CANCELLED) and m.content)
    ]


def _auto_decision(
    requested: str, *, content: str, conversation: Conversation, before_id: int | None = None
) -> RouteDecision | None:
    """For Auto, the router's tier, decided before the transaction (the embedding takes milliseconds,
    and no row lock may wait on it). `before_id`: only the history before that message counts."""
    if requested != AUTO:
        return None
    history = [m for m in _history(conversation) if before_id is None or m.pk < before_id]
    return auto_decide(content=content, history=[m.content for m in history])


def _resolve_model(
    requested: str, *, content: str, history: list[Message], images: bool, decision: RouteDecision | None = None
) -> tuple[ModelSpec, str]:
    """A concrete model for what the user picked, and for Auto the line that says why."""
    if requested == AUTO:
        route = route_for_message(
            content=content, history=[m.content for m in history], images=images, decision=decision
        )
        return route.spec, route.reason
    if send_sql.enabled():
        spec = send_sql.model_by_slug(requested)
    else:
        spec = ModelSpec.objects.filter(slug=requested).first()
    return _check_model(spec, requested=requested), ""


def _check_model(spec: ModelSpec | None, *, requested: str) -> ModelSpec:
    """`spec`, the row of the model named `requested`, if it may answer."""
    if spec is None or not spec.enabled:
        raise InvalidMessage(f"There is no model called {requested!r}.", code="unknown_model")
    if not spec.available:
        log.info("model unavailable", extra={"model": spec.slug, "reason": spec.operator_reason})
        raise ModelUnavailable(f"{spec.name} is temporarily unavailable; pick another model or Auto.")
    return spec


def _message_tokens(message: Message, spec: ModelSpec) -> int:
    """The message as `spec` counts it: its provider's tokenizer (leaning high), each image by
    the model's own formula (OpenAI's tiles, Claude's pixels / 750, Gemini's fixed count)."""
    urls = [a["url"] for a in message.attachments or []] if spec.image_input else []
    return model_message_tokens(spec, message.content, urls)


def _check_image_formats(prompt: Message, spec: ModelSpec) -> None:
    accepted = providers.capabilities(spec).image_formats
    for attachment in prompt.attachments or []:
        fmt = providers.image_info(attachment["url"]).format
        if fmt and fmt not in accepted:
            raise InvalidMessage(
                f"{spec.name} does not take {fmt.upper()} images; send PNG, JPEG or WebP.",
                code="image_format_not_supported",
            )


def _reply_queue(
    *,
    conversation: Conversation,
    spec: ModelSpec,
    requested_model: str,
    routed_by: str,
    candidates: list[Message],
    wallet_id: int,
    remember: Remember,
    retry_of: Message | None = None,
    escalation_of: Message | None = None,
    route_category: str = "",
) -> tuple[Message, list[Exception]]:
    """In the caller's transaction: trim the context, store a queued reply, remember it under
    the send's key, then hold its worst case as the transaction's last statement
    (`_reply_hold`); the reply is queued once that commits. The caller raises the queueing's
    failures after its transaction (`_raise_if_not_queued`)."""
    chosen, total = _reply_context(conversation=conversation, spec=spec, candidates=candidates)
    # The reply keeps the prices it is held at: a price change never alters it.
    prices = spec.prices_snapshot()
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        model=spec,
        requested_model=requested_model,
        routed_by=routed_by,
        retry_of=retry_of,
        escalation_of=escalation_of,
        route_category=route_category,
        context_ids=[m.pk for m in chosen],
        input_estimate=total,
        prices=prices,
    )
    remember(reply)
    _reply_hold(reply, wallet_id=wallet_id)
    return reply, _enqueue_after_commit(reply)


def _reply_context(*, conversation: Conversation, spec: ModelSpec, candidates: list) -> tuple[list, int]:
    """The context a reply is sent (the prompt, `candidates[-1]`, last) and its input estimate;
    a prompt too long for the model is refused."""
    budget = spec.context_window - spec.max_output_tokens
    prompt = candidates[-1]
    if spec.image_input:
        _check_image_formats(prompt, spec)
    # The conversation's system prompt goes with every reply, so it counts against the
    # context and the hold like the prompt itself.
    system = model_message_tokens(spec, conversation.system_prompt) if conversation.system_prompt else 0
    total = REPLY_PRIMING_TOKENS + system + _message_tokens(prompt, spec)
    if total > budget:
        raise InvalidMessage(
            f"This message is too long for {spec.name}: about {total:,} tokens, and the model takes "
            f"{budget:,} with room for its reply. Shorten it or pick a model with a larger context.",
            code="message_too_long",
        )
    chosen = [prompt]
    for earlier in reversed(candidates[:-1]):
        tokens = _message_tokens(earlier, spec)
        if total + tokens > budget:
            break  # the context is a contiguous tail of the conversation
        chosen.append(earlier)
        total += tokens
    chosen.reverse()
    return chosen, total


def _reply_hold(reply: Message, *, wallet_id: int) -> None:
    """Hold the reply's worst case and point the reply at the hold: one statement on
    PostgreSQL, the send's last, so the wallet's row is locked only from it to the commit.

    Sent with an API key: under that key's spend limit, as its /v1 calls are (the key's row
    is locked and its limit checked just before, and the hold linked to the key just after)."""
    amount = _hold_amount(reply.prices, input_estimate=reply.input_estimate, spec=reply.model)
    reply.hold = key_hold(
        api_key=acting_key(),
        amount=amount,
        place=lambda: wallet_hold(
            account=Account(pk=wallet_id),
            amount=amount,
            idempotency_key=f"message:{reply.pk}",
            reference=f"message:{reply.pk}",
            attach=(Message._meta.db_table, reply.pk),
        ),
    )


def _hold_amount(prices: dict, *, input_estimate: int, spec: ModelSpec) -> int:
    """A reply's hold: its worst case at the prices it keeps (at least one credit)."""
    return max(reply_cost(prices, input_tokens=input_estimate, output_tokens=spec.max_output_tokens), 1)


def _check_in_flight(user: AbstractBaseUser) -> None:
    """Refuse a reply past the user's cap on replies queued or streaming (counted before the
    new one is stored).

    Called under `_lock_for_send`'s lock on the user's row, held until commit: two sends of
    one user count in turn, so the cap is exact. It also keeps the queue fair: no user
    has more than the cap waiting in Celery, so one user's many slow replies cannot hold
    the worker pool while another user's reply waits.
    """
    cap = settings.MAX_REPLIES_IN_FLIGHT_PER_USER
    _refuse_past_cap(replies_in_flight(user=user) if cap else 0)


def _refuse_past_cap(in_flight: int) -> None:
    cap = settings.MAX_REPLIES_IN_FLIGHT_PER_USER
    if cap and in_flight >= cap:
        raise TooManyReplies(
            f"You already have {cap} {'reply' if cap == 1 else 'replies'} running, the most at once. "
            "Wait for one to finish (or stop one), then send again."
        )


def _enqueue_after_commit(reply: Message) -> list[Exception]:
    """Queue the reply once the transaction commits; a broker that is down fails it cleanly."""
    failures: list[Exception] = []

    def enqueue() -> None:
        from chat.tasks import message_enqueue

        try:
            message_enqueue(message_id=reply.pk)
        except Exception as exc:
            log.exception("could not queue a reply", extra={"message_id": reply.pk})
            # Only a reply still queued: a publish that reported an error may still have
            # reached the broker, and a worker may already be streaming the reply.
            if message_fail(
                reply,
                code="service_unavailable",
                text="The service is temporarily unavailable, so this reply was not started. Nothing was charged.",
                statuses=(Message.Status.QUEUED,),
            ):
                failures.append(exc)
        else:
            log.info(
                "reply queued", extra={"message_id": reply.pk, "model": reply.model.slug, "hold": reply.hold.amount}
            )

    transaction.on_commit(enqueue)
    return failures


def _raise_if_not_queued(failures: list[Exception]) -> None:
    if failures:
        raise ServiceUnavailable(
            "The service is temporarily unavailable and could not start the reply. "
            "Nothing was charged; please try again in a moment."
        )


def message_send(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    content: str,
    model: str,
    attachments: list | None = None,
    idempotency_key: str = "",
) -> Message:
    """Store the user's message and a queued reply with its hold, then queue the reply.

    Raises InvalidMessage/ModelUnavailable (400), wallet InsufficientCredits (402) or
    WalletFrozen (403) with nothing stored, Conflict (409) for an idempotency key used
    with another request, or ServiceUnavailable (503). A repeat of `idempotency_key`
    returns the first reply (or the first refusal) and stores nothing.
    """
    if not isinstance(content, str) or not content.strip():
        raise InvalidMessage("Write a message first.", code="empty_message")
    images = _clean_attachments(attachments)
    request = {"send": conversation.pk, "content": content, "model": model, "attachments": images}
    return send_once(
        user=user,
        key=idempotency_key,
        request=request,
        attempt=lambda remember: _send(
            user=user, conversation=conversation, content=content, model=model, images=images, remember=remember
        ),
    )


def _send(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    content: str,
    model: str,
    images: list[dict],
    remember: Remember,
) -> Message:
    if send_sql.enabled():
        return _send_in_two_statements(
            user=user, conversation=conversation, content=content, model=model, images=images, remember=remember
        )
    # What needs no lock happens before the transaction: Auto's decision (the router's
    # embedding) and the model's row (with the decision made, Auto needs no history).
    decision = _auto_decision(model, content=content, conversation=conversation)
    spec, routed_by = _resolve_model(model, content=content, history=[], images=bool(images), decision=decision)
    _check_takes_images(spec, images)
    with transaction.atomic():
        locked, wallet_id = _lock_for_send(conversation, user=user, title=_title_from(content))
        history = _history(locked)
        _check_in_flight(user)
        prompt = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=content, attachments=images
        )
        reply, failures = _reply_queue(
            conversation=locked,
            spec=spec,
            requested_model=model,
            routed_by=routed_by,
            candidates=[*history, prompt],
            wallet_id=wallet_id,
            remember=remember,
        )
    _raise_if_not_queued(failures)
    return reply


def _check_takes_images(spec: ModelSpec, images: list) -> None:
    if images and not spec.image_input:
        raise InvalidMessage(f"{spec.name} does not take images.", code="images_not_supported")


def _send_in_two_statements(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    content: str,
    model: str,
    images: list[dict],
    remember: Remember,
) -> Message:
    """PostgreSQL: the same checks and rows as the ORM path, in six statements
    (chat/send_sql.py): BEGIN; the lock (`_lock_for_send`'s statement); the model's row;
    the history with the count in flight; one statement that stores the prompt and the
    reply and places the hold (linked to the API key the send acts with, and with the
    Idempotency-Key's record); COMMIT. The wallet's row is locked from
    that statement to the COMMIT. A refusal raises, which rolls back
    everything the statement wrote."""
    auto = model == AUTO
    if auto:  # the router's embedding, before the transaction (no row lock waits on it)
        decision = _auto_decision(model, content=content, conversation=conversation)
        spec, routed_by = _resolve_model(model, content=content, history=[], images=bool(images), decision=decision)
        _check_takes_images(spec, images)
    api_key = acting_key()
    ledger_sql.prepare_connection()  # a connection's set-up for prepared statements waits for autocommit
    with transaction.atomic():
        now = timezone.now()
        opened = send_sql.open_send(
            conversation_id=conversation.pk,
            user_id=user.pk,
            title=_title_from(content),
            now=now,
            slug=None if auto else model,
            count=bool(settings.MAX_REPLIES_IN_FLIGHT_PER_USER),
        )
        if not opened.found:
            raise Gone("This conversation no longer exists; it was deleted.")
        if not auto:
            spec, routed_by = _check_model(opened.spec, requested=model), ""
            _check_takes_images(spec, images)
        conversation.title, conversation.system_prompt, conversation.updated_at = (
            opened.title,
            opened.system_prompt,
            now,
        )
        wallet_id = opened.wallet_id or wallet_for_user(user=user).pk  # a user's first reply makes the wallet
        _refuse_past_cap(opened.in_flight)
        prompt = send_sql.Said(None, Message.Role.USER, content, images)
        chosen, total = _reply_context(conversation=conversation, spec=spec, candidates=[*opened.history, prompt])
        prices = spec.prices_snapshot()
        amount = _hold_amount(prices, input_estimate=total, spec=spec)
        if api_key is not None:  # the key's row is locked before the wallet's, as on /v1
            key_spend_check(api_key=api_key, amount=amount)
        stored = send_sql.store_and_hold(
            conversation_id=conversation.pk,
            user_id=user.pk,
            content=content,
            attachments=images,
            spec=spec,
            requested_model=model,
            routed_by=routed_by,
            context_before=[m.pk for m in chosen[:-1]],
            input_estimate=total,
            prices=prices,
            created_at=timezone.now(),
            account_id=wallet_id,
            amount=amount,
            ttl_seconds=settings.HOLD_TTL_SECONDS,
            api_key_id=None if api_key is None else api_key.pk,
            send_key=remember.record,
        )
        if stored.hold is None:  # the hold's key is the new reply's: only a frozen wallet places none
            raise WalletFrozen(stored.frozen_reason)
        if stored.hold.status == Hold.Status.REJECTED:
            raise InsufficientCredits(needed=amount, available=stored.available)
        if api_key is not None and not stored.linked:
            raise KeyInactive(f"API key {api_key.prefix} is no longer active")
        reply = stored.reply
        failures = _enqueue_after_commit(reply)
    _raise_if_not_queued(failures)
    return reply


def message_retry(*, user: AbstractBaseUser, message: Message, idempotency_key: str = "") -> Message:
    """A new reply in place of a failed one: the latest message of its conversation.

    A repeat of `idempotency_key` returns the first new reply (or the first refusal).
    """
    return send_once(
        user=user,
        key=idempotency_key,
        request={"retry": message.pk},
        attempt=lambda remember: _retry(user=user, message=message, remember=remember),
    )


def _retry(*, user: AbstractBaseUser, message: Message, remember: Remember) -> Message:
    if message.role != Message.Role.ASSISTANT or message.status != Message.Status.FAILED:
        raise Conflict("Only a failed reply can be retried.", code="not_retryable")
    requested = message.requested_model or (message.model.slug if message.model_id else AUTO)
    decision = None
    if requested == AUTO:
        earlier = _history(message.conversation)
        if earlier and earlier[-1].role == Message.Role.USER:
            decision = auto_decide(content=earlier[-1].content, history=[m.content for m in earlier[:-1]])
    with transaction.atomic():
        locked, wallet_id = _lock_for_send(message.conversation, user=user)
        latest = locked.messages.order_by("-id").first()
        if latest is None or latest.pk != message.pk:
            raise Conflict("Only the latest reply of a conversation can be retried.", code="not_retryable")
        history = _history(locked)
        if not history or history[-1].role != Message.Role.USER:
            raise Conflict("There is no message to answer.", code="not_retryable")
        prompt = history[-1]
        spec, routed_by = _resolve_model(
            requested,
            content=prompt.content,
            history=history[:-1],
            images=bool(prompt.attachments),
            decision=decision,
        )
        _check_in_flight(user)
        reply, failures = _reply_queue(
            conversation=locked,
            spec=spec,
            requested_model=requested,
            routed_by=routed_by,
            candidates=history,
            retry_of=message,
            wallet_id=wallet_id,
            remember=remember,
        )
    _raise_if_not_queued(failures)
    return reply


# --- edit and regenerate ------------------------------------------------------
#
# Branch-free: a conversation is one line of messages. Editing a message of yours, or
# asking for another reply, replaces the tail of the conversation from that point: the
# replaced messages are marked superseded (hidden, and never sent to a model again) and
# a new reply is held and queued as a send is. Nothing is deleted and the ledger is not
# touched: what a replaced reply cost stays charged, its usage line stays in the wallet.


def _lock_for_revision(message: Message, *, user: AbstractBaseUser) -> tuple[Conversation, int]:
    """The message's conversation, locked for a send (and the wallet's id); refused while a
    reply runs or if already replaced."""
    locked, wallet_id = _lock_for_send(message.conversation, user=user)
    if messages_running(conversation=locked):
        raise Conflict(
            "A reply in this conversation is still running; stop it or wait for it to finish first.",
            code="reply_in_progress",
        )
    if Message.objects.filter(pk=message.pk, superseded_at__isnull=False).exists():
        raise Conflict("This message was already replaced.", code="superseded")
    return locked, wallet_id


def _supersede_from(conversation: Conversation, *, first_id: int) -> None:
    conversation.messages.filter(id__gte=first_id, superseded_at__isnull=True).update(superseded_at=timezone.now())


def message_regenerate(
    *, user: AbstractBaseUser, message: Message, model: str = "", idempotency_key: str = ""
) -> Message:
    """Another reply to the message that `message` answered, replacing it and what followed.

    `model` is what to answer with (a slug or "auto"); empty keeps what was asked for before.
    """
    return send_once(
        user=user,
        key=idempotency_key,
        request={"regenerate": message.pk, "model": model},
        attempt=lambda remember: _regenerate(user=user, message=message, model=model, remember=remember),
    )


def _prompt_answered_by(reply: Message) -> Message | None:
    """The user's message a reply answered: the last one before it that is not replaced."""
    return (
        Message.objects.filter(
            conversation_id=reply.conversation_id, role=Message.Role.USER, id__lt=reply.pk, superseded_at__isnull=True
        )
        .order_by("-id")
        .first()
    )


def _regenerate(*, user: AbstractBaseUser, message: Message, model: str, remember: Remember) -> Message:
    if message.role != Message.Role.ASSISTANT:
        raise Conflict("Only a reply can be regenerated.", code="not_a_reply")
    requested = model or message.requested_model or (message.model.slug if message.model_id else AUTO)
    answered = _prompt_answered_by(message)
    decision = (
        _auto_decision(requested, content=answered.content, conversation=message.conversation, before_id=answered.pk)
        if answered is not None
        else None
    )
    with transaction.atomic():
        locked, wallet_id = _lock_for_revision(message, user=user)
        prompt = _prompt_answered_by(message)
        if prompt is None:
            raise Conflict("There is no message to answer.", code="not_retryable")
        _supersede_from(locked, first_id=prompt.pk + 1)
        history = _history(locked)
        spec, routed_by = _resolve_model(
            requested,
            content=prompt.content,
            history=history[:-1],
            images=bool(prompt.attachments),
            decision=decision if answered is not None and answered.pk == prompt.pk else None,
        )
        if prompt.attachments and not spec.image_input:
            raise InvalidMessage(f"{spec.name} does not take images.", code="images_not_supported")
        _check_in_flight(user)
        reply, failures = _reply_queue(
            conversation=locked,
            spec=spec,
            requested_model=requested,
            routed_by=routed_by,
            candidates=history,
            retry_of=message,
            wallet_id=wallet_id,
            remember=remember,
        )
    _raise_if_not_queued(failures)
    return reply


def message_edit(
    *, user: AbstractBaseUser, message: Message, content: str, model: str, idempotency_key: str = ""
) -> Message:
    """Your message `message` rewritten as `content`, and a new reply to it; the old message
    and everything after it are replaced. Images attached to it stay attached."""
    if not isinstance(content, str) or not content.strip():
        raise InvalidMessage("Write a message first.", code="empty_message")
    return send_once(
        user=user,
        key=idempotency_key,
        request={"edit": message.pk, "content": content, "model": model},
        attempt=lambda remember: _edit(user=user, message=message, content=content, model=model, remember=remember),
    )


def _edit(*, user: AbstractBaseUser, message: Message, content: str, model: str, remember: Remember) -> Message:
    if message.role != Message.Role.USER:
        raise Conflict("Only a message you wrote can be edited.", code="not_editable")
    decision = _auto_decision(model, content=content, conversation=message.conversation, before_id=message.pk)
    with transaction.atomic():
        locked, wallet_id = _lock_for_revision(message, user=user)
        _supersede_from(locked, first_id=message.pk)
        history = _history(locked)
        images = list(message.attachments or [])
        spec, routed_by = _resolve_model(
            model, content=content, history=history, images=bool(images), decision=decision
        )
        if images and not spec.image_input:
            raise InvalidMessage(f"{spec.name} does not take images.", code="images_not_supported")
        prompt = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=content, attachments=images
        )
        _check_in_flight(user)
        reply, failures = _reply_queue(
            conversation=locked,
            spec=spec,
            requested_model=model,
            routed_by=routed_by,
            candidates=[*history, prompt],
            wallet_id=wallet_id,
            remember=remember,
        )
    _raise_if_not_queued(failures)
    return reply


# --- ask the flagship -------------------------------------------------------------


def message_escalatable(message: Message) -> bool:
    """An Auto reply that a cheaper model answered, settled with text: "Ask the flagship" may re-run it."""
    return (
        message.role == Message.Role.ASSISTANT
        and message.requested_model == AUTO
        and message.status in (Message.Status.DONE, Message.Status.CANCELLED)
        and message.model_id is not None
        and tier_of(message.model) not in (FLAGSHIP, "demo")
        and bool(message.context_ids)
    )


def message_escalate(*, user: AbstractBaseUser, message: Message, idempotency_key: str = "") -> tuple[Message, bool]:
    """Re-run the prompt of an Auto reply on the flagship tier, as a second answer with its own hold.

    Returns (reply, created). Once per Auto reply: asking again returns the first
    escalation. The reply records what the router took the prompt for
    (route_category), which the usage page counts: Auto's real-world errors.
    """
    if not message_escalatable(message):
        raise Conflict(
            "Only an Auto reply from a cheaper model, once it has finished, can be asked of the flagship.",
            code="not_escalatable",
        )
    existing = message.escalations.order_by("id").first()
    if existing is not None:
        return existing, False
    prompt = Message.objects.filter(pk=message.context_ids[-1], conversation_id=message.conversation_id).first()
    if prompt is None or prompt.role != Message.Role.USER:
        raise Conflict("The message this reply answered is gone.", code="not_escalatable")
    earlier = [m for m in _history(message.conversation) if m.pk < prompt.pk]
    # Decided before the transaction: the router runs its embedding model.
    category = auto_decide(content=prompt.content, history=[m.content for m in earlier]).category
    spec = flagship_model(images=bool(prompt.attachments))
    if spec is None:
        raise ModelUnavailable("The flagship model is temporarily unavailable.")
    routed_by = f"Ask the flagship -> {spec.name} (Auto had answered with {message.model.name})"

    def attempt(remember: Remember) -> Message:
        with transaction.atomic():
            locked, wallet_id = _lock_for_send(message.conversation, user=user)
            again = message.escalations.order_by("id").first()
            if again is not None:
                return again
            candidates = [m for m in _history(locked) if m.pk <= prompt.pk]
            _check_in_flight(user)
            reply, failures = _reply_queue(
                conversation=locked,
                spec=spec,
                requested_model=spec.slug,
                routed_by=routed_by[:300],
                candidates=candidates,
                escalation_of=message,
                route_category=category,
                wallet_id=wallet_id,
                remember=remember,
            )
        _raise_if_not_queued(failures)
        return reply

    reply = send_once(user=user, key=idempotency_key, request={"escalate": message.pk}, attempt=attempt)
    return reply, True


# --- cancel -------------------------------------------------------------------


def message_cancel(*, message: Message) -> Message:
    """Stop a reply. Queued: nothing was generated, nothing is charged. Streaming: the
    worker sees the request within a few chunks and charges for what was generated."""
    if message.role != Message.Role.ASSISTANT:
        raise Conflict("Only a reply can be cancelled.", code="not_a_reply")
    if message.finished:
        return message
    Message.objects.filter(pk=message.pk, status__in=RUNNING).update(cancel_requested=True)
    try:
        streams.request_cancel(message)
    except Exception:
        log.exception("could not record a cancel request", extra={"message_id": message.pk})
        raise ServiceUnavailable("The service is temporarily unavailable and could not stop the reply.")
    with transaction.atomic():
        cancelled = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
            status=Message.Status.CANCELLED,
            input_tokens=0,
            output_tokens=0,
            cost=0,
            finished_at=timezone.now(),
        )
        if cancelled and message.hold_id:
            wallet_void(hold=message.hold, reason="cancelled before it started")
    message.refresh_from_db()
    if cancelled:
        announce_done(message)
    return message
