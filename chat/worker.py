"""The worker runtime: claim a queued reply, stream it from the provider into Redis,
settle it (post or void its hold) exactly once, and the sweep that ends replies a dead
worker left behind.

Money rules: the reply is settled exactly once, by the compare-and-swap that ends it
(streaming -> done/cancelled/failed) in the same transaction as the post or void.
No transaction is open while a model is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from chat import claim, providers, streams
from chat.costs import reply_cost
from chat.models import Message, ModelSpec
from chat.tokens import estimate_output_tokens
from wallet import ledger_sql
from wallet.batching import wallet_post_along_batched
from wallet.errors import HoldNotPending
from wallet.models import Account, Hold
from wallet.services import wallet_charge, wallet_post, wallet_void

log = logging.getLogger(__name__)
T = TypeVar("T")

# The worker looks for a cancel request every this many chunks, or this often,
# whichever comes first: one Redis round trip per check, unless a write of the reply's
# text read the flag since the last check (streams.ReplyWriter: every write reads it in
# its own round trip).
CANCEL_CHECK_CHUNKS = 8
CANCEL_CHECK_SECONDS = 0.25
# A reply stops this long before its hold expires, so it can still be settled.
DEADLINE_MARGIN_SECONDS = 30
RUNNING = (Message.Status.QUEUED, Message.Status.STREAMING)
# A reply whose hold has at least this long left settles through the ledger's group
# commit; closer to the hold's end (where the sweep, which locks the reply before the
# hold, may be at work) it settles on its own, locking the reply first as the sweep does.
BATCH_MARGIN_SECONDS = 10


@dataclass
class _Outcome:
    parts: list[str] = field(default_factory=list)
    usage: providers.Usage | None = None
    cancelled: bool = False
    truncated: bool = False
    failure: providers.ProviderError | None = None
    hold_ends: float = float("-inf")  # when the hold expires, on time.monotonic()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _provider_messages(message: Message, spec: ModelSpec, context: dict[int, tuple[str, str, list]]) -> list[dict]:
    """The model's request: the system prompt, then the context's messages (`context`:
    id -> (role, content, attachments)) in the reply's order; images only to a model that reads them."""
    triples = []
    for pk in message.context_ids:
        if (found := context.get(pk)) is not None:
            role, content, attachments = found
            triples.append((role, content, attachments if spec.image_input else []))
    system = [("system", message.conversation.system_prompt, [])] if message.conversation.system_prompt else []
    return providers.to_openai_messages(system + triples)


def _context(message: Message) -> dict[int, tuple[str, str, list]]:
    return {
        pk: (role, content, attachments)
        for pk, role, content, attachments in Message.objects.filter(pk__in=message.context_ids).values_list(
            "pk", "role", "content", "attachments"
        )
    }


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


def _stream(
    message: Message, spec: ModelSpec, writer: streams.ReplyWriter, deadline: float, request: list[dict]
) -> _Outcome:
    outcome = _Outcome()
    attempt = 0
    while True:
        # The first call asks nothing more of Redis: the claim read the reply's cancel flag
        # (a cancel sets it before anything else), and one that comes after the claim is
        # seen within a few chunks, as for any streaming reply. A retry asks again.
        if message.cancel_requested if attempt == 0 else streams.cancel_requested(message):
            outcome.cancelled = True
            return outcome
        try:
            temperature = message.conversation.temperature  # the conversation's setting, None for the default
            reply = providers.chat_stream(
                spec=spec,
                messages=request,
                max_tokens=spec.max_output_tokens,
                temperature=float(temperature) if temperature is not None else None,
                # No read may outlast the time the hold has left.
                timeout=max(1.0, min(float(settings.MODEL_TIMEOUT_SECONDS), deadline - time.monotonic())),
            )
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
                    if writer.cancel_seen:
                        outcome.cancelled = True
                        break
                    now = time.monotonic()
                    if chunks % CANCEL_CHECK_CHUNKS == 0 or now - checked_at >= CANCEL_CHECK_SECONDS:
                        # A write since the last check has read the flag (and found none).
                        fresh = writer.cancel_read_at >= checked_at
                        checked_at = now
                        if not fresh and streams.cancel_requested(message):
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


class ClaimUnanswered(OperationalError):
    """The database failed while the reply was being claimed: the claim may have
    committed without its answer arriving. The retry carries the marks of every such
    claim (`lost_claims`): it takes the reply again if it is still streaming with one of
    them (no model was called for it yet), and finds it queued if none committed."""

    def __init__(self, lost_claims: tuple[dt.datetime, ...]) -> None:
        super().__init__(f"the database did not answer the claim made at {lost_claims[-1].isoformat()}")
        self.lost_claims = lost_claims


def message_run(*, message_id: int, lost_claims: tuple[dt.datetime, ...] = ()) -> None:
    """The worker's body: claim the reply, stream it from the model, settle it once.

    `lost_claims` are the marks (`started_at`) of this task's earlier claims whose answer
    was lost (`ClaimUnanswered`): a reply streaming since one of them is taken again. The
    claim always sets a new mark, so a delivery of this same retry after a worker died
    mid-reply finds a mark it does not carry and leaves the reply alone, as any second
    delivery does: the model is not called twice for one reply."""
    started_at = timezone.now()
    # The time left is read on the database's clock, which set the hold's expiry and
    # which the sweep reads: a worker whose own clock is off neither starts a reply it
    # can't settle in time nor drops one that has time.
    if connection.vendor == "postgresql":
        # Claim, reply, clock and context: one statement (chat/claim.py).
        try:
            claimed = claim.claim(message_id, started_at=started_at, lost_claims=lost_claims)
        except (OperationalError, InterfaceError) as exc:
            raise ClaimUnanswered((*lost_claims, started_at)) from exc
        if claimed is None:
            # A second delivery of the task, a cancelled reply, or a deleted conversation.
            log.info("reply not queued; nothing to do", extra={"message_id": message_id})
            return
        message, db_now, context = claimed.message, claimed.db_now, claimed.context
    else:
        try:
            claimed_rows = (
                Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT)
                .filter(
                    Q(status=Message.Status.QUEUED) | Q(status=Message.Status.STREAMING, started_at__in=lost_claims)
                )
                .update(status=Message.Status.STREAMING, started_at=started_at)
            )
        except (OperationalError, InterfaceError) as exc:
            raise ClaimUnanswered((*lost_claims, started_at)) from exc
        if not claimed_rows:
            log.info("reply not queued; nothing to do", extra={"message_id": message_id})
            return
        message = _when_the_database_answers(
            lambda: (
                Message.objects.select_related("model", "hold", "conversation")
                .annotate(db_now=Now())
                .get(pk=message_id)
            ),
            message_id=message_id,
            doing="starting a reply",
            seconds=DEADLINE_MARGIN_SECONDS,
        )
        db_now, context = message.db_now, None
    log.info("reply claimed", extra={"message_id": message_id, "model": message.model.slug})
    writer = streams.ReplyWriter(message, linger=settings.REPLY_COALESCE_MS / 1000)
    hold = message.hold
    left = (hold.expires_at - db_now).total_seconds() if hold else 0
    if hold is None or hold.status != Hold.Status.PENDING or left <= DEADLINE_MARGIN_SECONDS:
        message_fail(
            message,
            code="expired",
            text="This reply waited too long to start and was dropped. Nothing was charged.",
            writer=writer,
        )
        return
    hold_ends = time.monotonic() + left
    deadline = hold_ends - DEADLINE_MARGIN_SECONDS
    # The model call can take minutes and needs no database: give the connection back,
    # so a worker holding a thousand replies does not hold a thousand connections.
    # Settling opens a new one. (Inside a caller's transaction, as in some tests, the
    # connection must stay.)
    try:
        # The context is read before the connection goes back: the call then needs none.
        if context is None:
            context = _when_the_database_answers(
                lambda: _context(message),
                message_id=message_id,
                doing="starting a reply",
                seconds=DEADLINE_MARGIN_SECONDS,
            )
        request = _provider_messages(message, message.model, context)
    except Exception:
        log.exception("reply failed unexpectedly", extra={"message_id": message_id})
        request = None
    if not connection.in_atomic_block:
        connection.close()
    try:
        if request is None:
            raise RuntimeError("the reply's context could not be read")
        outcome = _stream(message, message.model, writer, deadline, request)
    except Exception:
        if request is not None:
            log.exception("reply failed unexpectedly", extra={"message_id": message_id})
        outcome = _Outcome(
            failure=providers.ProviderError(
                code="internal_error", message="Something went wrong on our side.", transient=False
            )
        )
    outcome.hold_ends = hold_ends
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
            _finish(
                message,
                writer,
                status=Message.Status.CANCELLED,
                text="",
                usage=providers.Usage(0, 0),
                hold_ends=outcome.hold_ends,
            )
            return
        failure = outcome.failure or providers.ProviderError(
            code="empty_reply", message="The model returned an empty reply.", transient=False
        )
        if outcome.usage is None or outcome.failure is not None:
            message_fail(message, code=failure.code, text=f"{failure.message} Nothing was charged.", writer=writer)
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
        hold_ends=outcome.hold_ends,
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
    hold_ends: float = float("-inf"),
) -> None:
    """End the reply (streaming -> `status`) and post its hold at the cost of `usage`, at once."""
    spec = message.model
    hold = message.hold
    # At the prices the reply was held at, whatever the catalog says now.
    cost = reply_cost(
        message.prices or spec.prices_snapshot(),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )
    memo = f"{spec.name}: {usage.input_tokens} in / {usage.output_tokens} out" + (" (estimated)" if estimated else "")
    ended = {
        "status": status,
        "content": text,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "usage_estimated": estimated,
        "cost": cost,
        "error_code": warning_code,
        "error_message": warning[:500],
        "finished_at": timezone.now(),
    }
    batch = time.monotonic() < hold_ends - BATCH_MARGIN_SECONDS
    wallet = _end_and_post(message, ended, cost=cost, memo=memo, batch=batch)
    if wallet is None:
        # Not in one statement (SQLite; above the hold, where wallet_post charges the excess;
        # a hold expired or resolved; a take-back waiting): the same end, in a transaction.
        try:
            with transaction.atomic():
                if not Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(**ended):
                    raise HoldNotPending("the sweep ended the reply first")
                wallet_post(hold=hold, amount=cost, memo=memo)
        except HoldNotPending:
            # Settled after the hold's time limit (the hold expired, or the sweep failed the
            # reply and voided it). The text reached the user: it is still paid for.
            if not _settle_late(
                message, status=status, text=text, usage=usage, estimated=estimated, cost=cost, memo=memo
            ):
                return
            ended.update(error_code="late", error_message=LATE_WARNING)
    for name, value in ended.items():  # as the database has them now
        setattr(message, name, value)
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
    announce_done(message, writer=writer, wallet=wallet)


# The reply's end, for the ledger's post statement (ledger_sql.Along): the reply is
# locked first (as the sweep locks it before the hold), and ends only with the post.
_END_FIRST = "SELECT id FROM chat_message WHERE id = %(m_id)s AND status = 'streaming' FOR UPDATE"
_END_THEN = """UPDATE chat_message SET status = %(m_status)s, content = %(m_content)s,
    input_tokens = %(m_input)s, output_tokens = %(m_output)s, usage_estimated = %(m_estimated)s,
    cost = %(m_cost)s, error_code = %(m_code)s, error_message = %(m_warning)s, finished_at = %(m_finished)s
    FROM h WHERE chat_message.id = %(m_id)s RETURNING 1"""


def _end_and_post(message: Message, ended: dict, *, cost: int, memo: str, batch: bool) -> tuple[int, int] | None:
    """The reply's compare-and-swap and its post as one statement on PostgreSQL, through
    the ledger's group commit if `batch`; the wallet's (balance, held) after it, or None
    if it could not be done that way (nothing changed then)."""
    hold = message.hold
    if not ledger_sql.enabled() or hold is None:
        return None
    along = ledger_sql.Along(
        first=_END_FIRST,
        then=_END_THEN,
        params={
            "m_id": message.pk,
            "m_status": ended["status"],
            "m_content": ended["content"],
            "m_input": ended["input_tokens"],
            "m_output": ended["output_tokens"],
            "m_estimated": ended["usage_estimated"],
            "m_cost": ended["cost"],
            "m_code": ended["error_code"],
            "m_warning": ended["error_message"],
            "m_finished": ended["finished_at"],
        },
    )
    if wallet_post_along_batched(hold=hold, amount=cost, along=along, memo=memo, batch=batch) is None:
        return None
    return along.balance, along.held


LATE_WARNING = "This reply was settled after its time limit; you paid for the part received."


def _settle_late(
    message: Message, *, status: str, text: str, usage: providers.Usage, estimated: bool, cost: int, memo: str
) -> bool:
    """End a reply whose hold is gone and charge what it used; False if there is nothing to end.

    The reply's end (streaming, or failed by the sweep for its time limit, -> done or
    cancelled) and the charge are one transaction; the charge's key makes a repeat a no-op.
    """
    with transaction.atomic():
        ended = (
            Message.objects.filter(pk=message.pk)
            .filter(Q(status=Message.Status.STREAMING) | Q(status=Message.Status.FAILED, error_code="expired"))
            .update(
                status=status,
                content=text,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                usage_estimated=estimated,
                cost=cost,
                error_code="late",
                error_message=LATE_WARNING,
                finished_at=timezone.now(),
            )
        )
        if not ended:
            log.warning("reply ended elsewhere before it was settled", extra={"message_id": message.pk})
            return False
        wallet_void(hold=message.hold, reason="expired before the reply was settled")
        if cost:
            wallet_charge(
                account=Account.objects.get(pk=message.hold.account_id),
                amount=cost,
                idempotency_key=f"message:{message.pk}:late",
                reference=f"message:{message.pk}",
                memo=f"{memo} (after its hold expired)",
            )
    log.warning("reply settled after its hold's time limit", extra={"message_id": message.pk, "cost": cost})
    return True


def announce_done(
    message: Message, *, writer: streams.ReplyWriter | None = None, wallet: tuple[int, int] | None = None
) -> None:
    """The `done` event; `wallet` is the wallet's (balance, held) as the settlement left it,
    else it is read."""
    if wallet is None:
        wallet = Account.objects.filter(user__conversations=message.conversation_id).values_list(
            "balance", "held"
        ).first() or (0, 0)
    balance, held = wallet
    payload = streams.done_payload(message, balance=balance, available=balance - held)
    if writer is not None:
        writer.terminal("done", payload)
    else:
        streams.append_terminal(message, "done", payload)


def message_fail(
    message: Message,
    *,
    code: str,
    text: str,
    writer: streams.ReplyWriter | None = None,
    statuses: tuple[str, ...] = RUNNING,
) -> bool:
    """End a reply (in one of `statuses`) as failed and release its hold; False if it had already ended."""
    with transaction.atomic():
        failed = Message.objects.filter(pk=message.pk, status__in=statuses).update(
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
    # On the database's clock, as the worker reads the time a reply has left.
    stale = Message.objects.filter(status__in=RUNNING, hold__expires_at__lte=now or Now()).select_related(
        "hold", "conversation"
    )
    count = 0
    for message in stale:
        count += message_fail(
            message,
            code="expired",
            text="This reply stopped before it finished (the service restarted). Nothing was charged.",
        )
    return count
