"""Chat: conversations, sending a message (hold, then queue), running a reply (the
worker), cancel, retry, and the sweep that ends replies a dead worker left behind.

Money rules: the hold is placed in the same transaction that stores the messages;
the reply is settled exactly once, by the compare-and-swap that ends it
(streaming -> done/cancelled/failed) in the same transaction as the post or void.
No transaction is open while a model is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from chat import providers, streams
from chat.errors import Conflict, InvalidMessage, ModelUnavailable, ServiceUnavailable
from chat.models import Conversation, Message, ModelSpec
from chat.routing import route_for_message
from chat.selectors import messages_running
from chat.tokens import REPLY_PRIMING_TOKENS, estimate_message_tokens, estimate_output_tokens
from wallet.errors import HoldNotPending
from wallet.models import Hold
from wallet.selectors import wallet_summary
from wallet.services import cost_in_credits, wallet_for_user, wallet_hold, wallet_post, wallet_void

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTO = "auto"
TITLE_CHARS = 60
MAX_ATTACHMENTS = 4
_IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")
# The worker looks for a cancel request every this many chunks, or this often,
# whichever comes first: one Redis round trip per check.
CANCEL_CHECK_CHUNKS = 8
CANCEL_CHECK_SECONDS = 0.25
# A reply stops this long before its hold expires, so it can still be settled.
DEADLINE_MARGIN_SECONDS = 30
RUNNING = (Message.Status.QUEUED, Message.Status.STREAMING)


# --- conversations ------------------------------------------------------------


def conversation_create(*, user: AbstractBaseUser, title: str = "") -> Conversation:
    return Conversation.objects.create(user=user, title=title.strip()[:200])


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = title.strip()[:200]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    """Deleting a conversation whose reply is still running would leave its hold to the sweep."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if messages_running(conversation=locked):
            raise Conflict(
                "A reply in this conversation is still running; stop it or wait for it to finish, then delete.",
                code="reply_in_progress",
            )
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
        for m in conversation.messages.order_by("id")
        if m.role == Message.Role.USER or (m.status in (Message.Status.DONE, Message.Status.CANCELLED) and m.content)
    ]


def _resolve_model(requested: str, *, content: str, history: list[Message], images: bool) -> tuple[ModelSpec, str]:
    """A concrete model for what the user picked, and for Auto the line that says why."""
    if requested == AUTO:
        route = route_for_message(content=content, history=[m.content for m in history], images=images)
        return route.spec, route.reason
    spec = ModelSpec.objects.filter(slug=requested).first()
    if spec is None or not spec.enabled:
        raise InvalidMessage(f"There is no model called {requested!r}.", code="unknown_model")
    if not spec.available:
        raise ModelUnavailable(f"{spec.name} is not available right now ({spec.unavailable_reason}).")
    return spec, ""


def _message_tokens(message: Message, spec: ModelSpec) -> int:
    images = len(message.attachments or []) if spec.image_input else 0
    return estimate_message_tokens(message.content, images=images)


def _reply_create(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    spec: ModelSpec,
    requested_model: str,
    routed_by: str,
    candidates: list[Message],
    retry_of: Message | None = None,
) -> Message:
    """Trim the context, store a queued reply and hold its worst case; in the caller's transaction."""
    budget = spec.context_window - spec.max_output_tokens
    prompt = candidates[-1]
    total = REPLY_PRIMING_TOKENS + _message_tokens(prompt, spec)
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
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        model=spec,
        requested_model=requested_model,
        routed_by=routed_by,
        retry_of=retry_of,
        context_ids=[m.pk for m in chosen],
        input_estimate=total,
    )
    worst_case = cost_in_credits(
        input_tokens=total,
        output_tokens=spec.max_output_tokens,
        input_price=spec.input_price,
        output_price=spec.output_price,
    )
    reply.hold = wallet_hold(
        account=wallet_for_user(user=user),
        amount=max(worst_case, 1),
        idempotency_key=f"message:{reply.pk}",
        reference=f"message:{reply.pk}",
    )
    reply.save(update_fields=["hold"])
    return reply


def _enqueue_after_commit(reply: Message) -> list[Exception]:
    """Queue the reply once the transaction commits; a broker that is down fails it cleanly."""
    failures: list[Exception] = []

    def enqueue() -> None:
        from chat.tasks import message_enqueue

        try:
            message_enqueue(message_id=reply.pk)
        except Exception as exc:
            log.exception("could not queue a reply", extra={"message_id": reply.pk})
            failures.append(exc)
            _fail(
                reply,
                code="service_unavailable",
                text="The service is temporarily unavailable, so this reply was not started. Nothing was charged.",
            )
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
) -> Message:
    """Store the user's message and a queued reply with its hold, then queue the reply.

    Raises InvalidMessage/ModelUnavailable (400), wallet InsufficientCredits (402) or
    WalletFrozen (403) with nothing stored, or ServiceUnavailable (503).
    """
    if not isinstance(content, str) or not content.strip():
        raise InvalidMessage("Write a message first.", code="empty_message")
    images = _clean_attachments(attachments)
    with transaction.atomic():
        # Sends in one conversation take turns, so each builds its context in order.
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        history = _history(locked)
        spec, routed_by = _resolve_model(model, content=content, history=history, images=bool(images))
        if images and not spec.image_input:
            raise InvalidMessage(f"{spec.name} does not take images.", code="images_not_supported")
        prompt = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=content, attachments=images
        )
        reply = _reply_create(
            user=user,
            conversation=locked,
            spec=spec,
            requested_model=model,
            routed_by=routed_by,
            candidates=[*history, prompt],
        )
        if not locked.title:
            locked.title = _title_from(content)
        locked.save(update_fields=["title", "updated_at"])
        failures = _enqueue_after_commit(reply)
    _raise_if_not_queued(failures)
    return reply


def message_retry(*, user: AbstractBaseUser, message: Message) -> Message:
    """A new reply in place of a failed one: the latest message of its conversation."""
    if message.role != Message.Role.ASSISTANT or message.status != Message.Status.FAILED:
        raise Conflict("Only a failed reply can be retried.", code="not_retryable")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=message.conversation_id)
        latest = locked.messages.order_by("-id").first()
        if latest is None or latest.pk != message.pk:
            raise Conflict("Only the latest reply of a conversation can be retried.", code="not_retryable")
        history = _history(locked)
        if not history or history[-1].role != Message.Role.USER:
            raise Conflict("There is no message to answer.", code="not_retryable")
        prompt = history[-1]
        requested = message.requested_model or (message.model.slug if message.model_id else AUTO)
        spec, routed_by = _resolve_model(
            requested, content=prompt.content, history=history[:-1], images=bool(prompt.attachments)
        )
        reply = _reply_create(
            user=user,
            conversation=locked,
            spec=spec,
            requested_model=requested,
            routed_by=routed_by,
            candidates=history,
            retry_of=message,
        )
        locked.save(update_fields=["updated_at"])
        failures = _enqueue_after_commit(reply)
    _raise_if_not_queued(failures)
    return reply


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
        _announce_done(message)
    return message


# --- the worker ---------------------------------------------------------------


@dataclass
class _Outcome:
    parts: list[str] = field(default_factory=list)
    usage: providers.Usage | None = None
    cancelled: bool = False
    truncated: bool = False
    failure: providers.ProviderError | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _provider_messages(message: Message, spec: ModelSpec) -> list[dict]:
    by_id = Message.objects.in_bulk(message.context_ids)
    triples = [
        (m.role, m.content, m.attachments if spec.image_input else [])
        for pk in message.context_ids
        if (m := by_id.get(pk)) is not None
    ]
    return providers.to_openai_messages(triples)


def _backoff(attempt: int) -> float:
    return min(0.5 * 2 ** (attempt - 1), 8.0) * (1 + random.random() * 0.25)


def _wait(message: Message, seconds: float, deadline: float) -> bool:
    """Sleep before a retry, in slices, watching for a cancel; False if cancelled or out of time."""
    until = time.monotonic() + seconds
    if until >= deadline:
        return False
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(left, CANCEL_CHECK_SECONDS))
        if streams.cancel_requested(message):
            return False
    return True


def _stream(message: Message, spec: ModelSpec, writer: streams.ReplyWriter, deadline: float) -> _Outcome:
    outcome = _Outcome()
    request = _when_the_database_answers(
        lambda: _provider_messages(message, spec),
        message_id=message.pk,
        doing="starting a reply",
        seconds=DEADLINE_MARGIN_SECONDS,
    )
    attempt = 0
    while True:
        if streams.cancel_requested(message):
            outcome.cancelled = True
            return outcome
        try:
            reply = providers.chat_stream(spec=spec, messages=request, max_tokens=spec.max_output_tokens)
            try:
                chunks = 0
                checked_at = time.monotonic()
                for chunk in reply:
                    if chunk.text:
                        if not outcome.parts:
                            log.info("first token", extra={"message_id": message.pk, "attempt": attempt})
                        outcome.parts.append(chunk.text)
                        writer.delta(chunk.text)
                    if chunk.usage is not None:
                        outcome.usage = chunk.usage
                    chunks += 1
                    now = time.monotonic()
                    if chunks % CANCEL_CHECK_CHUNKS == 0 or now - checked_at >= CANCEL_CHECK_SECONDS:
                        checked_at = now
                        if streams.cancel_requested(message):
                            outcome.cancelled = True
                            break
                        if now >= deadline:
                            outcome.truncated = True
                            break
            finally:
                reply.close()
            return outcome
        except providers.ProviderError as err:
            if outcome.parts:
                # Text has streamed: the call is never repeated (it would bill twice
                # and the reader has already shown the first half).
                outcome.failure = err
                return outcome
            if err.transient and attempt < settings.MODEL_FIRST_TOKEN_RETRIES:
                attempt += 1
                wait = err.retry_after if err.retry_after is not None else _backoff(attempt)
                log.info(
                    "model call failed before the first token; retrying",
                    extra={"message_id": message.pk, "code": err.code, "attempt": attempt, "wait": wait},
                )
                if not _wait(message, wait, deadline):
                    if streams.cancel_requested(message):
                        outcome.cancelled = True
                    else:
                        outcome.failure = err
                    return outcome
                continue
            outcome.failure = err
            return outcome


def message_run(*, message_id: int) -> None:
    """The worker's body: claim the reply, stream it from the model, settle it once."""
    claimed = Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING, started_at=timezone.now()
    )
    if not claimed:
        # A second delivery of the task, a cancelled reply, or a deleted conversation.
        log.info("reply not queued; nothing to do", extra={"message_id": message_id})
        return
    message = _when_the_database_answers(
        lambda: Message.objects.select_related("model", "hold", "conversation__user").get(pk=message_id),
        message_id=message_id,
        doing="starting a reply",
        seconds=DEADLINE_MARGIN_SECONDS,
    )
    log.info("reply claimed", extra={"message_id": message_id, "model": message.model.slug})
    writer = streams.ReplyWriter(message)
    hold = message.hold
    left = (hold.expires_at - timezone.now()).total_seconds() if hold else 0
    if hold is None or hold.status != Hold.Status.PENDING or left <= DEADLINE_MARGIN_SECONDS:
        _fail(
            message,
            code="expired",
            text="This reply waited too long to start and was dropped. Nothing was charged.",
            writer=writer,
        )
        return
    deadline = time.monotonic() + left - DEADLINE_MARGIN_SECONDS
    # The model call can take minutes and needs no database: give the connection back,
    # so a worker holding a thousand replies does not hold a thousand connections.
    # Settling opens a new one. (Inside a caller's transaction, as in some tests, the
    # connection must stay.)
    if not connection.in_atomic_block:
        connection.close()
    try:
        outcome = _stream(message, message.model, writer, deadline)
    except Exception:
        log.exception("reply failed unexpectedly", extra={"message_id": message_id})
        outcome = _Outcome(
            failure=providers.ProviderError(
                code="internal_error", message="Something went wrong on our side.", transient=False
            )
        )
    # The hold's last DEADLINE_MARGIN_SECONDS are kept for settling.
    _when_the_database_answers(
        lambda: _settle(message, outcome, writer),
        message_id=message_id,
        doing="settling a reply",
        seconds=DEADLINE_MARGIN_SECONDS - 5,
    )


def _when_the_database_answers(fn: Callable[[], T], *, message_id: int, doing: str, seconds: float) -> T:
    """`fn()`, tried again while the database is unreachable (a restart, a failover).

    A reply whose worker gave up on a database error mid-way would stay running until
    its hold expired (the sweep then fails it): after the model had answered, and been
    paid. Every step retried here is a read or one compare-and-swap transaction, so an
    attempt after a commit whose answer was lost does nothing.
    """
    give_up_at = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                # Inside a caller's transaction a retry can't help, and closing the
                # connection would break that transaction for everything after it.
                raise
            attempt += 1
            wait = min(0.5 * 2 ** (attempt - 1), 4.0)
            if time.monotonic() + wait > give_up_at:
                raise
            log.warning(
                "database unavailable while %s; retrying",
                doing,
                extra={"message_id": message_id, "attempt": attempt},
                exc_info=True,
            )
            connection.close()  # the next query opens a new connection
            time.sleep(wait)


def _settle(message: Message, outcome: _Outcome, writer: streams.ReplyWriter) -> None:
    text = outcome.text
    if not text:
        if outcome.cancelled:
            _finish(message, writer, status=Message.Status.CANCELLED, text="", usage=providers.Usage(0, 0))
            return
        failure = outcome.failure or providers.ProviderError(
            code="empty_reply", message="The model returned an empty reply.", transient=False
        )
        if outcome.usage is None or outcome.failure is not None:
            _fail(message, code=failure.code, text=f"{failure.message} Nothing was charged.", writer=writer)
            return
    estimated = outcome.usage is None
    usage = outcome.usage or providers.Usage(message.input_estimate, estimate_output_tokens(text))
    warning_code = warning = ""
    if outcome.failure is not None and estimated:
        warning_code = "incomplete"
        warning = f"The reply was cut off ({outcome.failure.message}); you paid for the part received (estimated)."
    elif outcome.truncated:
        warning_code = "incomplete"
        warning = "The reply ran out of time and was cut short; you paid for the part received (estimated)."
    elif estimated and not outcome.cancelled:
        warning_code = "usage_estimated"
        warning = "The model did not report its token usage; this reply was billed on an estimate."
    status = Message.Status.CANCELLED if outcome.cancelled else Message.Status.DONE
    _finish(
        message,
        writer,
        status=status,
        text=text,
        usage=usage,
        estimated=estimated,
        warning_code=warning_code,
        warning=warning,
    )


def _finish(
    message: Message,
    writer: streams.ReplyWriter,
    *,
    status: str,
    text: str,
    usage: providers.Usage,
    estimated: bool = False,
    warning_code: str = "",
    warning: str = "",
) -> None:
    """Post the hold at the cost of `usage` and end the reply, in one transaction."""
    spec = message.model
    hold = message.hold
    cost = cost_in_credits(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        input_price=spec.input_price,
        output_price=spec.output_price,
    )
    if cost > hold.amount:
        log.warning(
            "reply cost more than its hold; charging the hold",
            extra={"message_id": message.pk, "cost": cost, "hold": hold.amount},
        )
        cost = hold.amount
    try:
        with transaction.atomic():
            ended = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(
                status=status,
                content=text,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                usage_estimated=estimated,
                cost=cost,
                error_code=warning_code,
                error_message=warning[:500],
                finished_at=timezone.now(),
            )
            if not ended:
                # The sweep already failed it (and voided the hold): nothing to settle.
                log.warning("reply ended elsewhere before it was settled", extra={"message_id": message.pk})
                return
            wallet_post(
                hold=hold,
                amount=cost,
                memo=f"{spec.name}: {usage.input_tokens} in / {usage.output_tokens} out"
                + (" (estimated)" if estimated else ""),
            )
    except HoldNotPending:
        _fail(
            message,
            code="expired",
            text="This reply took longer than its time limit and could not be billed; nothing was charged.",
            writer=writer,
        )
        return
    message.refresh_from_db()
    log.info(
        "reply settled",
        extra={
            "message_id": message.pk,
            "status": status,
            "cost": cost,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "estimated": estimated,
        },
    )
    _announce_done(message, writer=writer)


def _announce_done(message: Message, *, writer: streams.ReplyWriter | None = None) -> None:
    summary = wallet_summary(user=message.conversation.user)
    payload = streams.done_payload(message, balance=summary.balance, available=summary.available)
    if writer is not None:
        writer.terminal("done", payload)
    else:
        streams.append_terminal(message, "done", payload)


def _fail(message: Message, *, code: str, text: str, writer: streams.ReplyWriter | None = None) -> bool:
    """End a reply as failed and release its hold; False if it had already ended."""
    with transaction.atomic():
        failed = Message.objects.filter(pk=message.pk, status__in=RUNNING).update(
            status=Message.Status.FAILED,
            error_code=code[:40],
            error_message=text[:500],
            cost=0,
            finished_at=timezone.now(),
        )
        if failed and message.hold_id:
            wallet_void(hold=message.hold, reason=f"reply failed: {code}")
    if failed:
        log.info("reply failed", extra={"message_id": message.pk, "code": code})
        payload = {"code": code, "message": text}
        if writer is not None:
            writer.terminal("error", payload)
        else:
            streams.append_terminal(message, "error", payload)
    return bool(failed)


# --- the sweep ----------------------------------------------------------------


def messages_fail_stale(*, now: dt.datetime | None = None) -> int:
    """Fail every reply still queued or streaming after its hold's time limit: its worker
    died or its task was lost. The hold is released, so nothing is charged."""
    now = now or timezone.now()
    stale = Message.objects.filter(status__in=RUNNING, hold__expires_at__lte=now).select_related("hold", "conversation")
    count = 0
    for message in stale:
        count += _fail(
            message,
            code="expired",
            text="This reply stopped before it finished (the service restarted). Nothing was charged.",
        )
    return count
